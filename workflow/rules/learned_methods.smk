# Trained methods evaluated side by side: SFNet, WeakAlign, FCSS.
