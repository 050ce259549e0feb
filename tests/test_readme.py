"""Every shell command in README.md and the docs/ pages is exercised (litgpt / vector-quantize-pytorch ``test_readme``
in spirit).

Each ```bash block of README.md and of every docs/*.md page that has one (```sh blocks: other projects' tools, of which only our own ``python -m`` modules are checked) runs in bash with shims in place of every program (``python``, ``ray``, ``curl``, ``make``, ...):
bash does the quoting, line continuations, ``export`` and ``$VAR`` expansion, and the shims only record the final
argv (``cluster/submit.sh`` runs for real with ``--dry-run`` and its ``ray job submit`` line is recorded). A program
without a shim fails the test, so a new kind of command needs a check here. Then every recorded command is checked
without doing its work: ``python -m`` modules through their own argument parsers and config loaders, ``ray``/``serve``
through Ray's click CLI (plus the files they name), ``make`` with ``make -n``, ``curl`` against the HTTP app's routes
and request schema, ``pip``/``hf`` with their parsers, and every repo path must exist. The cheap commands also run
for real: ``--help`` of every entry point, the by-hand pipeline's corpus and tokenization job (shrunk to 2 videos) with
every local pre-training command checked against the shards it made, the fine-tuning commands' driver checks and
weight loading on a debug checkpoint placed at their ``model.init_from`` URI, and the ``workflows.generate`` commands
on a debug checkpoint placed where the README's checkpoint paths point. The quick demo runs in
tests/workflows/test_demo.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# README.md and every docs/ page with ```bash blocks: the same checks run over each of them
PAGES = [README, *sorted(p for p in (REPO / "docs").glob("*.md") if "```bash\n" in p.read_text())]
SHIMS = ("python", "ray", "serve", "make", "curl", "pip", "hf", "tensorboard", "base64", "source")
PRELUDE = r"""
rec() { { printf '%s\0' "$@"; printf '\036\0'; } >> "$README_LOG"; }
""" + "".join(f'{name}() {{ rec {name} "$@"; }}\n' for name in SHIMS if name != "base64") + r"""
base64() { rec base64 "$@"; printf 'aGVsbG8='; }
cluster/submit.sh() {
  local cmd
  if cmd=$(PATH="$REAL_PATH" "$REPO/cluster/submit.sh" --dry-run "$@" 2>&1); then eval "$cmd"
  else rec submit-failed "$cmd"; fi
}
export() { rec export "$@"; builtin export "$@"; }
command_not_found_handle() { rec unknown "$@"; return 0; }
"""
OUR_PACKAGES = ("workflows.", "tokenize_jobs.", "lumos.")
REPO_DIRS = ("workflows/", "cluster/", "tokenize_jobs/", "lumos/", "bench/", "docs/", "tests/")


@dataclass
class Command:
    """One recorded command: the page (README.md or docs/*.md) and line of its block, and its argv after bash
    expansion."""

    line: int
    argv: list[str]
    page: str = "README.md"

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {shlex.join(self.argv)}"


def shell_blocks(text: str, lang: str = "bash") -> list[tuple[int, str]]:
    """(first line number, body) of every ```bash (our commands) or ```sh (other projects' commands) block."""
    return [(text[: m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(rf"```{lang}\n(.*?)```", text, re.S)]


def record_block(body: str, log: Path, home: Path, strict: bool = True) -> list[list[str]]:
    """Run one block with the shims; returns the recorded argvs (``strict``: the block must be valid bash)."""
    log.write_bytes(b"")
    env = {"PATH": "/nonexistent-readme-shims", "REAL_PATH": os.environ["PATH"], "REPO": str(REPO),
           "README_LOG": str(log), "HOME": str(home), "LANG": "C.UTF-8"}
    proc = subprocess.run(["/bin/bash", "--norc", "--noprofile", "-c", PRELUDE + body], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 or not strict, proc.stderr
    fields = log.read_bytes().split(b"\0")
    out, cur = [], []
    for f in fields[:-1]:
        if f == b"\x1e":
            out.append(cur)
            cur = []
        else:
            cur.append(f.decode())
    return out


def page_name(page: Path) -> str:
    return str(page.relative_to(REPO))


def page_commands(page: Path, tmp: Path) -> list[Command]:
    """The recorded commands of one page's ```bash blocks (and our own modules in its ```sh blocks)."""
    found, name, text = [], page_name(page), page.read_text()
    for line, body in shell_blocks(text):
        recorded = record_block(body, tmp / "log", tmp)
        assert recorded, f"{name}:{line}: a bash block without commands"
        found += [Command(line, argv, name) for argv in recorded]
    for line, body in shell_blocks(text, "sh"):  # other projects' tools: only our own modules are checked
        found += [Command(line, argv, name) for argv in record_block(body, tmp / "log", tmp, strict=False)
                  if argv[:2] == ["python", "-m"] and argv[2].startswith(OUR_PACKAGES)]
    return found


@pytest.fixture(scope="module")
def commands_by_page(tmp_path_factory) -> dict[str, list[Command]]:
    tmp = tmp_path_factory.mktemp("readme")
    return {page_name(p): page_commands(p, tmp) for p in PAGES}


@pytest.fixture(scope="module")
def commands(commands_by_page) -> list[Command]:
    """Every page's commands: the tests that look a command up by what it does find it on whichever page it is."""
    return [c for found in commands_by_page.values() for c in found]


# ---- checks without side effects ---------------------------------------------------------------------------------

def argparse_ok(fn, *args):
    """Call an argparse-based parser; a parser error (SystemExit) becomes an AssertionError with its message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return fn(*args)
    except SystemExit as e:
        raise AssertionError(f"argument error (status {e.code}): {err.getvalue().strip()}") from None


def check_synth(argv):
    from tokenize_jobs import synth

    argparse_ok(synth.parse_args, argv)  # a SynthConfig: bad values raise ValueError


def check_shapes(argv):
    from tokenize_jobs import shapes

    argparse_ok(shapes.parse_args, argv)


def check_video(argv):
    from tokenize_jobs import video

    argparse_ok(video.parse_args, argv)


def check_pretrain(argv):
    from workflows import pretrain
    from workflows.training.train_config import load_pretrain_config

    args = argparse_ok(pretrain.parse_args, argv)
    return load_pretrain_config(args.config, args.overrides)


def check_train_tokenizer(argv):
    from workflows import train_tokenizer as tt
    from workflows.config_io import load_config

    args = argparse_ok(tt.parse_args, argv)
    load_config(tt.TrainTokenizerConfig, args.config, args.overrides + ([f"out={args.out}"] if args.out else []))


def check_generate(argv):
    from unittest import mock

    from lumos.checkpoint import checkpoint_uri, named_checkpoints
    from workflows import generate

    args = argparse_ok(generate.build_parser().parse_args, argv)
    if "/" not in args.checkpoint and ":" not in args.checkpoint:  # a committed checkpoint by name
        assert args.checkpoint in named_checkpoints(), f"no committed checkpoint named {args.checkpoint!r}"
        assert Path(checkpoint_uri(args.checkpoint), "model.safetensors").is_file()
    with mock.patch.object(generate.storage, "exists", return_value=True):  # --image files are the user's
        generate.check_args(args)


def check_serve(argv):
    from workflows import serve

    serve.config_from_cli(argparse_ok(serve.build_parser().parse_args, argv))


def check_eval(argv):
    from workflows import eval as shapes_eval

    shapes_eval.settings_from_args(argparse_ok(shapes_eval.build_parser().parse_args, argv))


def check_convert(argv):
    from workflows import convert_hf

    convert_hf.parse_resolution(argparse_ok(convert_hf.parse_args, argv).resolution)


def check_ablate(argv):
    from workflows import ablate

    args = argparse_ok(ablate.build_parser().parse_args, argv)
    cfg = ablate.config_from_args(args)
    assert not args.checkpoint or cfg.study == "history", "--checkpoint is only used by --study history"
    assert bool(args.shards) == bool(args.val_shards), "--shards and --val-shards go together"


def check_bench_sets(argv):
    from unittest import mock

    from workflows import bench_sets

    args = argparse_ok(bench_sets.build_parser().parse_args, argv)
    with mock.patch.object(bench_sets.storage, "exists", return_value=True):  # the checkpoint is the user's
        bench_sets.settings_from_args(args)


def check_demo(argv):
    from workflows import demo

    argparse_ok(demo.parse_args, argv)


def check_showcase(argv):
    from workflows import showcase

    argparse_ok(showcase.build_parser().parse_args, argv)


def check_pool(argv):
    from workflows.evaluation import pool

    args = argparse_ok(pool.build_parser().parse_args, argv)
    assert len(args.runs) >= 2, "pooling needs two or more eval runs"


MODULES = {"tokenize_jobs.synth": check_synth, "tokenize_jobs.shapes": check_shapes,
           "tokenize_jobs.video": check_video, "workflows.pretrain": check_pretrain,
           "workflows.train_tokenizer": check_train_tokenizer, "workflows.generate": check_generate,
           "workflows.serve": check_serve, "workflows.eval": check_eval, "workflows.convert_hf": check_convert,
           "workflows.ablate": check_ablate, "workflows.bench_sets": check_bench_sets, "workflows.demo": check_demo,
           "workflows.showcase": check_showcase, "workflows.evaluation.pool": check_pool}


def check_python(argv: list[str]) -> None:
    if argv[:1] == ["-m"]:
        assert argv[1] in MODULES, f"no README check for python -m {argv[1]} (add one to tests/test_readme.py)"
        MODULES[argv[1]](argv[2:])
        return
    script = REPO / argv[0]
    assert script.suffix == ".py" and script.is_file(), f"{argv[0]}: no such script"
    compile(script.read_text(), str(script), "exec")
    if argv[0] == "cluster/fake_cluster.py":  # its own options, then the command it runs against the cluster
        import importlib.util

        spec = importlib.util.spec_from_file_location("fake_cluster", script)
        fake_cluster = sys.modules.setdefault("fake_cluster", importlib.util.module_from_spec(spec))
        spec.loader.exec_module(fake_cluster)  # (registered first: its dataclasses look their module up)
        args = argparse_ok(fake_cluster.parse_args, argv[1:])
        if args.command:
            check_command(args.command)


def click_context(group, argv: list[str]):
    """Resolve nested click groups and parse the leaf command's arguments (nothing is invoked)."""
    import click

    cmd, path = group, []
    while isinstance(cmd, click.Group):
        assert argv, f"missing subcommand after {' '.join(path) or cmd.name}"
        sub = cmd.get_command(click.Context(cmd), argv[0])
        assert sub is not None, f"unknown subcommand {argv[0]!r} of {' '.join(path) or cmd.name}"
        path.append(argv.pop(0))
        cmd = sub
    try:
        return cmd.make_context(" ".join(path), list(argv))
    except click.ClickException as e:
        raise AssertionError(f"{' '.join(path)}: {e.format_message()}") from None


def check_ray(argv: list[str]) -> None:
    from ray.scripts.scripts import cli

    params = click_context(cli, list(argv)).params
    if params.get("cluster_config_file"):
        assert (REPO / params["cluster_config_file"]).is_file(), f"{params['cluster_config_file']}: no such file"
    if params.get("working_dir"):
        assert (REPO / params["working_dir"]).is_dir(), f"--working-dir {params['working_dir']}: no such directory"
    if params.get("runtime_env"):
        import yaml
        from ray.runtime_env import RuntimeEnv

        RuntimeEnv(**yaml.safe_load((REPO / params["runtime_env"]).read_text()))
    if params.get("entrypoint"):  # ray job submit ... -- COMMAND
        check_command(list(params["entrypoint"]))


def check_serve_cli(argv: list[str]) -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema
    from ray.serve.scripts import cli

    ctx = click_context(cli, list(argv))
    target = ctx.params.get("config_or_import_path", "")
    if target.endswith((".yaml", ".yml")):
        ServeDeploySchema.model_validate(yaml.safe_load((REPO / target).read_text()))


def check_make(argv: list[str]) -> None:
    env = dict(os.environ, MAKEFLAGS="")
    proc = subprocess.run(["make", "-n", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"make -n {' '.join(argv)}: {proc.stderr.strip()}"
    for line in proc.stdout.splitlines():  # the python commands a target runs must parse too
        words = shlex.split(line) if " -m workflows." in line else []
        if words:
            check_python(words[words.index("-m"):])


def http_routes() -> dict[str, set[str]]:
    """Path → methods of the sampler's FastAPI app (routers included by Serve's ingress flattened)."""
    from workflows.serving.deployments import app

    def walk(routes):
        for r in routes:
            if hasattr(r, "path"):
                yield r.path, set(getattr(r, "methods", None) or ())
            elif hasattr(r, "original_router"):
                yield from walk(r.original_router.routes)

    return dict(walk(app.routes))


def check_curl(argv: list[str]) -> None:
    from workflows.serving.api import RequestError, parse_request

    body, method, url, i = None, "GET", None, 0
    while i < len(argv):
        a = argv[i]
        if a in ("-d", "--data", "--data-raw"):
            body, method, i = argv[i + 1], "POST" if method == "GET" else method, i + 2
        elif a == "-X":
            method, i = argv[i + 1], i + 2
        elif a in ("-H", "-o", "--header", "--output"):
            i += 2
        elif a.startswith("-"):
            i += 1
        else:
            url, i = a, i + 1
    assert url, "curl without a URL"
    path = "/" + url.split("://")[-1].split("/", 1)[1] if "/" in url.split("://")[-1] else "/"
    routes = http_routes()
    assert path in routes and method in routes[path], f"{method} {path} is not a route of the app ({sorted(routes)})"
    if body is not None:
        try:
            parse_request(body.encode())
        except RequestError as e:
            raise AssertionError(f"{path}: the body is refused with {e.status}: {e.message}") from None


def check_pip(argv: list[str]) -> None:
    from pip._internal.commands import create_command

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib

    cmd = create_command(argv[0])
    options, _ = argparse_ok(cmd.parse_args, argv[1:])
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for spec in options.editables or []:
        for extra in re.findall(r"\[(.*?)\]", spec)[:1]:
            assert set(extra.split(",")) <= set(extras), f"-e {spec}: unknown extra (have {sorted(extras)})"


HF_VALUE_OPTIONS = {"--include", "--exclude", "--local-dir", "--revision", "--cache-dir", "--repo-type", "--type",
                    "--token", "--max-workers"}


def check_hf(argv: list[str]) -> None:
    assert argv[0] == "download", f"hf {argv[0]}: only 'hf download' is checked"
    positional, options, i = [], set(), 1
    while i < len(argv):
        if argv[i] in HF_VALUE_OPTIONS:
            options.add(argv[i])
            i += 2
        else:
            assert not argv[i].startswith("--"), f"hf download: unknown option {argv[i]}"
            positional.append(argv[i])
            i += 1
    repo_id, files = positional[0], positional[1:]
    assert any(f"https://huggingface.co/{repo_id}" in p.read_text() for p in PAGES), (
        f"{repo_id} is not a repo linked in the README or the docs")
    assert not (files and "--include" in options), (
        f"hf download ignores --include when file names are given ({files}): repeat --include per pattern")


def check_source(argv: list[str]) -> None:
    assert argv == [".venv/bin/activate"], f"source {argv}: only the venv's activate script is expected"
    assert (REPO / "Makefile").read_text().count("VENV    ?= .venv") == 1


def check_tensorboard(argv: list[str]) -> None:
    import tensorboard  # noqa: F401

    assert "--logdir" in argv


def check_export(argv: list[str]) -> None:
    """Exported variables must be ones that something here (or Ray / the AWS SDKs) reads."""
    sources = "".join(p.read_text() for d in ("lumos", "workflows", "tokenize_jobs") for p in (REPO / d).rglob("*.py"))
    sources += (REPO / "Makefile").read_text() + (REPO / "cluster" / "submit.sh").read_text()
    for a in argv:
        name = a.split("=", 1)[0]
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and "=" in a, f"export {a}: expected NAME=value"
        assert name.startswith(("AWS_", "RAY_")) or name in sources, f"export {name}: nothing here reads it"


def check_repo_paths(argv: list[str]) -> None:
    """Every argument (or ``key=value`` value) that names a file of this repo must exist."""
    for a in argv:
        value = a.split("=", 1)[1] if re.match(r"^[\w.]+=", a) else a
        for word in value.split():
            if word.startswith(REPO_DIRS):
                assert (REPO / word).exists(), f"{word}: no such file in the repo"


HANDLERS = {"python": check_python, "ray": check_ray, "serve": check_serve_cli, "make": check_make,
            "curl": check_curl, "pip": check_pip, "hf": check_hf, "tensorboard": check_tensorboard,
            "source": check_source, "export": check_export, "base64": lambda argv: None}


def check_command(argv: list[str]) -> None:
    prog, *args = argv
    assert prog not in ("unknown", "submit-failed"), f"{prog}: {args}"
    check_repo_paths(args)
    HANDLERS[prog](args)


def test_readme_has_shell_commands(commands):
    progs = {c.argv[0] for c in commands}
    assert {"python", "ray", "make", "curl"} <= progs and len(commands) > 40


def test_every_page_has_shell_commands(commands_by_page):
    assert "README.md" in commands_by_page and len(commands_by_page) > 1
    empty = [page for page, found in commands_by_page.items() if not found]
    assert not empty, empty


@pytest.mark.parametrize("page", [page_name(p) for p in PAGES])
def test_every_readme_command_checks_out(page, commands_by_page, monkeypatch):
    monkeypatch.chdir(REPO)  # README and docs commands run from the repo root
    failures = []
    for c in commands_by_page[page]:
        try:
            check_command(list(c.argv))
        except Exception as e:  # report every bad command at once
            failures.append(f"{c}\n    -> {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    assert not failures, "\n".join(failures)


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to dashes."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", text, re.M)}


@pytest.mark.parametrize("page", [page_name(p) for p in PAGES])
def test_readme_links_point_at_files(page):
    """Relative links (to files, and to headings of pages here) resolve from the page's own folder."""
    path = REPO / page
    text = path.read_text()
    links = re.findall(r"\]\((?!https?://)([^)\s]+)\)", text) + re.findall(r'<img src="([^"]+)"', text)
    missing = []
    for link in links:
        target, _, anchor = link.partition("#")
        target = (path.parent / target).resolve() if target else path
        if not target.exists() or (anchor and target.suffix == ".md" and anchor not in anchors(target.read_text())):
            missing.append(link)
    assert links and not missing, missing


def test_readme_commands_fail_loudly_on_a_broken_line(tmp_path):
    """The harness itself: an unknown program, a bad flag and a missing config are all caught."""
    recorded = record_block('frobnicate --now\npython -m workflows.pretrain --config workflows/configs/nope.yaml\n'
                            'ray job submit --no-such-flag -- python -m workflows.demo\n', tmp_path / "log", tmp_path)
    assert recorded[0] == ["unknown", "frobnicate", "--now"]
    for argv in recorded:
        with pytest.raises(AssertionError):
            check_command(argv)


# ---- commands that run for real ----------------------------------------------------------------------------------

def readme_modules() -> list[str]:
    return sorted(set(re.findall(r"python -m ((?:workflows|tokenize_jobs)(?:\.\w+)+)", "".join(p.read_text() for p in PAGES))))


@pytest.mark.parametrize("module", readme_modules())
def test_entry_point_help_runs(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]


def test_submit_sh_help_runs():
    proc = subprocess.run([str(REPO / "cluster" / "submit.sh"), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "JOB:" in proc.stdout


def local_path(arg: str, sandbox: Path) -> str:
    """README paths → the sandbox: ``/tmp/x`` and relative ``runs/x`` both land under ``sandbox``."""
    return str(sandbox / arg[len("/tmp/"):]) if arg.startswith("/tmp/") else arg


def module_commands(commands: list[Command], module: str) -> list[Command]:
    return [c for c in commands if c.argv[:3] == ["python", "-m", module]]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working directory with the repo's configs where README commands run (``runs/`` stays inside)."""
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "configs").symlink_to(REPO / "workflows" / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.ray
@pytest.mark.slow
def test_by_hand_pipeline_corpus_and_tokenize_run_and_pretraining_accepts_the_shards(commands, ray_local, sandbox):
    from lumos.tokenizers import default_tokenizer_uri
    from tokenize_jobs import synth, video
    from workflows.pretrain import resolve_tokenizer
    from workflows.training.finetune import prepare_init
    from workflows.training.shard_data import check_shards

    try:
        default_tokenizer_uri("small")
    except ValueError:
        pytest.skip("the committed small video tokenizer is not in lumos/assets yet")
    make = next(c for c in module_commands(commands, "tokenize_jobs.synth") if option(c.argv, "--out") == "runs/corpus")
    argv = list(make.argv[3:])
    argv[argv.index("--videos") + 1] = "2"  # the README's 256 → 2: same code path, seconds
    assert synth.main(argv) == 0, make
    tok = next(c for c in module_commands(commands, "tokenize_jobs.video")
               if option(c.argv, "--manifest") == "runs/corpus/manifest.jsonl")
    assert video.main(list(tok.argv[3:])) == 0, tok
    shards = sandbox / option(tok.argv, "--out")
    manifest = check_shards(str(shards))
    assert manifest.clips_written == 2 and manifest.counts["errors"] == 0

    local = [c for c in module_commands(commands, "workflows.pretrain")
             if any(a.startswith("data.shards=") and "://" not in a for a in c.argv)]
    assert local
    for c in local:  # /tmp/shards (the Tokenization job section) is made the same way: same tokenizer, sizes
        argv = [f"data.shards={shards}" if a.startswith("data.shards=") else local_path(a, sandbox) for a in c.argv]
        cfg = check_pretrain(argv[3:])
        shard_manifest = check_shards(cfg.data.shards)  # as run_pretraining: the model meets the shards, then
        assert resolve_tokenizer(prepare_init(cfg, shard_manifest), shard_manifest), c  # the tokenizer


def pretrain_commands(commands: list[Command]) -> list[Command]:
    """``workflows.pretrain`` commands, also those run through ``ray job submit ... -- COMMAND``."""
    out = []
    for c in commands:
        argv = c.argv[c.argv.index("--") + 1:] if c.argv[:3] == ["ray", "job", "submit"] and "--" in c.argv else c.argv
        if argv[:3] == ["python", "-m", "workflows.pretrain"]:
            out.append(Command(c.line, argv))
    return out


def test_finetune_commands_start_from_their_checkpoint(commands, sandbox, s3_server):
    """Every ``model.init_from`` pre-training command: a debug checkpoint placed at its URI (moto S3, or local under
    the sandbox) passes the driver's checks (config, weights header) and its weights load as the workers do."""
    import dataclasses

    import boto3
    import torch

    from lumos import storage
    from lumos.checkpoint import save_checkpoint
    from lumos.config import model_preset
    from lumos.model import LumosModel
    from tokenize_jobs.shards import ShardManifest
    from workflows.training.finetune import load_init_weights, prepare_init

    runs = [c for c in pretrain_commands(commands) if any(a.startswith("model.init_from=") for a in c.argv)]
    assert runs
    torch.manual_seed(0)
    src = LumosModel(model_preset("debug"))
    for c in runs:
        uri = next(a.split("=", 1)[1] for a in c.argv if a.startswith("model.init_from="))
        if storage.is_s3(uri):
            boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"]).create_bucket(Bucket=uri[5:].split("/")[0])
        save_checkpoint(uri, src, src.cfg, extra={"video_tokenizer": None, "text_tokenizer": None})
        cfg = prepare_init(check_pretrain(c.argv[3:]), ShardManifest({}))  # the shards are the user's
        recipe = model_preset(cfg.model.preset, **cfg.model.overrides)
        assert cfg.model.build() == dataclasses.replace(src.cfg, activation_checkpointing=recipe.activation_checkpointing)
        model = LumosModel(cfg.model.build())
        load_init_weights(model, cfg.model.init_from, rank=0)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values())), c


@pytest.mark.slow
def test_generate_commands_run_on_a_debug_checkpoint(commands, sandbox):
    import torch

    from lumos.checkpoint import save_checkpoint
    from lumos.config import model_preset
    from lumos.media import read_video_frames, write_video
    from lumos.model import LumosModel
    from lumos.shapes.world import render_clip, sample_scene, scene_rng
    from lumos.tokenizers import build_video_tokenizer, save_video_tokenizer
    from workflows import generate

    runs = [c for c in module_commands(commands, "workflows.generate")
            if option(c.argv, "--checkpoint").startswith("runs/")]
    assert len(runs) >= 4
    torch.manual_seed(0)
    model = LumosModel(model_preset("debug"))
    for ckpt in {option(c.argv, "--checkpoint") for c in runs}:
        save_video_tokenizer(str(sandbox / ckpt / "tokenizer"), build_video_tokenizer("debug", seed=0))
        save_checkpoint(str(sandbox / ckpt), model, model.cfg, extra={"video_tokenizer": "tokenizer"})
    write_video("first.png", render_clip(sample_scene(scene_rng(0, 0)), size=64, num_frames=1))
    torch.set_num_threads(1)
    for c in runs:
        argv = [*c.argv[3:], "--quiet"]
        assert generate.main(argv) == 0, c
        outs = generate.output_paths(option(argv, "--out"), argv.count("--prompt"))
        for out in outs:
            if out.endswith((".gif", ".mp4")):
                assert read_video_frames(out).shape[0] >= 1, c
            else:
                assert Path(out).stat().st_size > 0, c
