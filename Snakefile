# Dense semantic correspondence workflow. Run `make run` (demo) or see README.md.
from snakemake.utils import min_version, validate

min_version("9.0")


# The embedded default, found next to this Snakefile whatever the working directory (-d). A config
# given with --configfile replaces it (no silent merge of the demo's settings into another dataset).
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, "config/schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/methods.smk"
include: "workflow/rules/hpf.smk"
include: "workflow/rules/manifold.smk"
include: "workflow/rules/pseudo_flow.smk"
include: "workflow/rules/siamese.smk"
include: "workflow/rules/chain.smk"
include: "workflow/rules/learned_methods.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
