"""What a newcomer meets first: the README's commands run by CI, the wrappers' exit status, the Docker files, the
configs and the authors' recipe they resolve to."""
import pytest
import yaml

from conftest import REPO
from engine.config import load_config


def readme_commands() -> list[str]:
    """The commands of the README's first code block (the two set-up commands)."""
    text = (REPO / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readmes_test_command():
    demo, tests = readme_commands()
    assert "bash train_supconmpl_model.sh" in demo and "pip install -r requirement.txt" in demo
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    # every step of the README's test command is a step of CI's (which adds only pip's --quiet)
    for step in tests.split("&&"):
        words = step.split()
        assert any(line.replace(" --quiet", "").split()[-len(words):] == words for line in ci), step


def test_docker_compose_file_is_valid():
    import shutil
    import subprocess
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        build = service.get("build", {})
        context = REPO / (build.get("context", ".") if isinstance(build, dict) else build)
        assert (context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")).is_file()
    if shutil.which("docker") is None:
        pytest.skip("docker not installed: the file was only parsed")
    res = subprocess.run(["docker", "compose", "config", "--quiet"], cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0 and ("is not a docker command" in res.stderr or "unknown command" in res.stderr
                                or "unknown flag" in res.stderr):
        pytest.skip("docker has no compose plugin: the file was only parsed")
    assert res.returncode == 0, res.stderr


def test_the_image_and_the_container_as_documented():
    """Static checks (Docker is absent here): one torch (the pinned one, no torch in the base image), the build
    context without runs/datasets/weights, ids passed explicitly, GPUs chosen by GPU_IDS, datasets outside the
    repository's data/ (where the demo is written), no fixed container name."""
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    base = next(line for line in lines if line.startswith("FROM")).split()[1]
    assert "pytorch" not in base and "cuda" not in base, base
    assert any("pip install -r /tmp/requirement.txt" in line for line in lines)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"runs/", "data/", "weights/", ".git"} <= set(ignored)
    (service,) = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"].values()
    assert "container_name" not in service and set(service["build"]["args"]) == {"HOST_UID", "HOST_GID"}
    assert service["environment"]["CUDA_VISIBLE_DEVICES"] == "${GPU_IDS:-0}"
    mounts = [v.split(":")[1] for v in service["volumes"]]
    assert "/workspace" in mounts and not any(m.startswith("/workspace/") for m in mounts)


def test_the_wrappers_exit_with_the_scripts_status_and_evaluate_nothing_after_a_failed_training(tmp_path):
    import subprocess
    for method in ("pt", "supcon", "supconmpl", "mpl"):
        res = subprocess.run(["bash", f"train_{method}_model.sh", "--config", str(tmp_path / "missing.yaml")],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode == 2 and lines == [f"error: config file not found: {tmp_path / 'missing.yaml'}"], \
            (method, res.returncode, res.stderr)


def test_every_config_loads():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.name == "paths.yaml":  # dataset roots, not a config
            continue
        cfg = load_config(str(path))
        assert cfg["run_name"] == path.stem


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
