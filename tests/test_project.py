"""What a newcomer meets first: README commands, CI script, requirements, Docker files, configs."""
import re

import yaml

from conftest import REPO
from engine.config import load_config


def test_readme_starts_with_the_two_commands():
    head = (REPO / "README.md").read_text().splitlines()[:6]
    text = "\n".join(head)
    assert "pip install -r requirement.txt && bash train_supconmpl_model.sh" in text
    assert "pip install -r requirement.txt && pip install --no-deps facenet-pytorch==2.6.0 && python -m pytest" in text


def test_ci_installs_requirements_and_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install" in ci and "-r requirement.txt" in ci
    assert "python -m pytest" in ci and "--no-deps facenet-pytorch==2.6.0" in ci


def test_requirements_pin_torch_and_list_the_stack():
    names = {}
    for line in (REPO / "requirement.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name = re.split(r"[<>=!~]", line)[0].strip().lower()
            names[name] = line
    assert names["torch"] == "torch==2.14.1" and names["torchvision"] == "torchvision==0.29.1"
    assert {"timm", "numpy", "scikit-learn", "tqdm", "pyyaml"} <= set(names)
    assert any(n.startswith("opencv") for n in names)


def test_docker_compose_reserves_gpu_and_mounts_repo_and_data():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    assert service["shm_size"]
    volumes = service["volumes"]
    assert any(v.startswith(".:") for v in volumes) and any("/data" in v.split(":")[-1] for v in volumes)
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"


def test_dockerfile_uses_cuda_pytorch_installs_requirements_and_runs_as_a_user():
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    from_line = next(line for line in lines if line.startswith("FROM"))
    assert "pytorch" in from_line and "cuda" in from_line and "runtime" in from_line  # no build tools
    text = "\n".join(lines)
    # The image's Python dependencies are exactly requirement.txt (+ the detector without its deps).
    assert "COPY requirement.txt" in text and "pip install -r /tmp/requirement.txt" in text
    assert "pip install --no-deps facenet-pytorch==2.6.0" in text
    assert "PIP_NO_CACHE_DIR=1" in text and "rm -rf /tmp/requirement.txt /root/.cache" in text
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1] not in ("root", "0")


def test_compose_selects_gpus_by_environment():
    compose = (REPO / "docker-compose.yml").read_text()
    assert "${GPU_IDS:-0}" in compose and "${DATA_DIR:-./data}" in compose


def test_every_config_loads():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.name == "paths.yaml":  # dataset roots, not a config
            continue
        cfg = load_config(str(path))
        assert cfg["run_name"] == path.stem


def test_shell_scripts_train_on_the_first_line_then_evaluate():
    for method in ("pt", "supcon", "supconmpl", "mpl"):
        lines = (REPO / f"train_{method}_model.sh").read_text().splitlines()
        # NPROC=N puts torchrun in front of the same command (one code path for 1 or N processes)
        assert f"python train_{method}.py \"$@\" || exit" in lines[0] and lines[0].startswith("${NPROC:+")
        assert any(line.startswith(f"python evaluate.py --method {method}") for line in lines[1:])


def test_shell_scripts_pass_shellcheck():
    import shutil
    import subprocess

    import pytest
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    scripts = [str(p) for p in sorted(REPO.glob("*.sh")) + sorted(REPO.glob("bench/*.sh"))] + [str(REPO / ".ci" / "run")]
    res = subprocess.run(["shellcheck", "-S", "warning", *scripts], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


# The authors' recipe (their .sh scripts and code): what every protocol config must resolve to.
AUTHORS_RECIPE = {
    "seed": 777, "backbone": "resnet50", "pretrained": "imagenet", "img_size": 64, "input_scale": "project",
    "data.balance": False, "pt.steps": 1000, "pt.batch_size": 512, "pt.lr": 1e-4, "pt.weight_decay": 0.0,
    "supcon.steps": 1000, "supcon.batch_size": 512, "supcon.lr": 1e-4, "supcon.temperature": 0.1,
    "supcon.feat_dim": 128, "supcon.classifier_steps": 1000, "supcon.classifier_batch_size": 512,
    "supcon.classifier_lr": 1e-4, "mpl.steps": 5000, "mpl.batch_labeled": 64, "mpl.batch_unlabeled": 448,
    "mpl.teacher_lr": 1e-4, "mpl.student_lr": 1e-4, "mpl.temperature": 0.1, "mpl.T": 1.0,
    "mpl.feedback": "new_minus_old", "mpl.finetune_steps": 1000, "mpl.finetune_classifier_steps": 1000,
    "mpl.finetune_lr": 1e-4, "aug.scale": [0.5, 1.0], "aug.hflip": 0.5, "aug.color_jitter": [0.4, 0.4, 0.4, 0.1],
    "aug.color_jitter_p": 0.8, "aug.grayscale_p": 0.2, "aug.unlabeled_weak": {}, "aug.unlabeled_strong": {},
    "aug.jpeg_p": 0.0, "aug.blur_p": 0.0, "val.enabled": False, "val.select": "last",
}


def test_protocol_configs_resolve_to_the_authors_recipe():
    for name in ("ff_wo_df", "ff_wo_f2f", "ff_wo_fs", "ff_wo_nt", "sin", *(f"dfb_ff_wo_{m}" for m in ("df", "f2f", "fs", "nt"))):
        cfg = load_config(str(REPO / "configs" / f"{name}.yaml"))
        for key, value in AUTHORS_RECIPE.items():
            node = cfg
            for part in key.split("."):
                node = node[part]
            assert node == value, f"{name}: {key} = {node!r}, the authors' recipe has {value!r}"
