# Path builders and target lists; no science here.
import json

R = config["results_dir"]
D = config["dataset"]["name"]
DATA = f"{R}/{D}"


wildcard_constraints:
    backbone="[A-Za-z0-9_.-]+",
    method="[A-Za-z0-9_+.-]+",


def cfg_params(*keys):
    """The config sections a rule depends on, as one canonical string (a params rerun trigger)."""
    return json.dumps({k: config[k] for k in keys}, sort_keys=True)


def dataset_inputs(wildcards=None):
    """The generated demo is an input of every stage that reads the dataset; real data lives outside."""
    return [f"{DATA}/data"] if config["dataset"]["kind"] == "demo" else []


def final_outputs():
    out = []
    for b in config["backbones"]:
        out += [f"{DATA}/{b}/pck_summary.csv", f"{DATA}/{b}/pck_summary.md", f"{DATA}/{b}/pck_summary.png"]
    return out
