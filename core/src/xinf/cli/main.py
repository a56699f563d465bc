"""``xinf``: serve models, and manage a running server.

Only click is imported here; each command imports what it needs, so
``xinf --help`` stays fast whatever engines are installed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from xinf.cli import ops
from xinf.cli.catalog import catalog
from xinf.cli.options import client, echo_json, endpoint_option, json_option
from xinf.cli.table import render
from xinf.types import MODEL_TYPES


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xinf")
def cli() -> None:
    """Serve language models behind an OpenAI-compatible API."""


# ---------------------------------------------------------------- serve


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9997, show_default=True, type=int, help="Port to listen on.")
@click.option("--model", "models", multiple=True, metavar="NAME", help="Launch this model once serving (repeatable).")
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request.")
@click.option(
    "--api-key",
    default=None,
    help="Admin key (visible in ps: prefer $XINF_API_KEY or --api-key-file).",
)
@click.option(
    "--api-key-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="File of 'admin KEY' / 'inference KEY' lines, KEY or sha256:HEX ($XINF_API_KEYS_FILE).",
)
@click.option(
    "--forwarded-allow-ips",
    default=None,
    metavar="IPS",
    help="Comma-separated proxies whose X-Forwarded-For is trusted ($XINF_FORWARDED_ALLOW_IPS; default: none).",
)
@click.option(
    "--cors-allow-origins",
    default=None,
    metavar="ORIGINS",
    help="Comma-separated browser origins allowed to call the API, or '*' ($XINF_CORS_ALLOW_ORIGINS; default: none).",
)
@click.option(
    "--cluster",
    metavar="ray|ray://HOST:PORT|HOST:PORT",
    default=None,
    help="Serve across a running Ray cluster: 'ray' joins the one on this machine ($RAY_ADDRESS), "
    "ray://HOST:PORT or HOST:PORT a remote head. Needs the ray extra (pip install 'xinf[ray]').",
)
def serve(
    host: str,
    port: int,
    models: tuple[str, ...],
    log_level: str,
    access_log: bool,
    api_key: str | None,
    api_key_file: str | None,
    forwarded_allow_ips: str | None,
    cors_allow_origins: str | None,
    cluster: str | None,
) -> None:
    """Start the server."""
    import logging

    import uvicorn

    from xinf.server.app import create_app
    from xinf.settings import Settings, SettingsError

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    if api_key:
        settings.api_key = api_key
        click.echo("warning: --api-key shows in the process list; use $XINF_API_KEY or --api-key-file", err=True)
    from xinf.server import connections, security

    try:
        security.apply_options(settings, api_key_file, forwarded_allow_ips, cors_allow_origins)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    joined = None
    if cluster:
        joined = join_cluster(cluster)
    app = create_app(settings, launch_at_start=[{"model_name": name} for name in models], cluster=joined)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    click.echo(f"xinf serving on http://{host}:{port} (home {settings.home})", err=True)
    for note in security.startup_notes(settings, host):
        logging.getLogger("xinf.server").warning(note)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        loop=loop,
        timeout_graceful_shutdown=10,
        # X-Forwarded-For only from the proxies the operator names (uvicorn trusts 127.0.0.1 by default).
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        **connections.configure(settings),
    )


def join_cluster(address: str) -> Any:
    """Connect to the Ray cluster at ``address`` (imports Ray, and only here)."""
    try:
        from xinf.cluster import connect

        joined = connect(address)
    except ImportError as exc:
        raise click.ClickException(f"--cluster needs Ray: pip install 'xinf[ray]' ({exc})") from None
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError ...
        raise click.ClickException(f"could not join the Ray cluster at {address!r}: {exc}") from None
    nodes = joined.inventory().nodes
    click.echo(f"joined the Ray cluster at {address}: {len(nodes)} node(s)", err=True)
    return joined


# ---------------------------------------------------------------- models


def parse_extra(args: list[str]) -> dict[str, Any]:
    """``--n_ctx 4096 --sampling.top_k 20`` -> engine options (JSON values where they parse)."""
    options: dict[str, Any] = {}
    i = 0
    while i < len(args):
        key = args[i]
        if not key.startswith("--") or len(key) < 3:
            raise click.UsageError(f"unexpected argument {key!r}; engine options look like --name value")
        key = key[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 2
        else:
            value = "true"
            i += 1
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("-n", "--model-name", help="Built-in or registered model name.")
@click.option(
    "-t",
    "--model-type",
    type=click.Choice(["LLM", "embedding", "rerank", "audio", "image"]),
    help="The model's type (default: the catalogue's, or guessed from --model-path's files).",
)
@click.option("-en", "--model-engine", help="Engine to use (default: the best match).")
@click.option("-f", "--model-format", help="pytorch, ggufv2, gptq, awq, fp8, fp4, bnb, mlx, ctranslate2 or onnx.")
@click.option("-s", "--size-in-billions", help="Model size in billions of parameters.")
@click.option("-q", "--quantization", help="Quantization, as listed by the model's family.")
@click.option("-u", "--model-uid", help="Name to serve the model under (default: the model name).")
@click.option("-r", "--replica", default=1, show_default=True, type=int, help="Number of replicas.")
@click.option("--n-gpu", default="auto", show_default=True, help="GPUs per replica: a number, auto, or 0 for CPU.")
@click.option("--gpu-idx", help="Comma-separated GPU indexes to use.")
@click.option("--worker-ip", help="In a cluster: the node to run on (its IP address or Ray node id).")
@click.option("--env", "envs", type=(str, str), multiple=True, metavar="KEY VALUE", help="Env var for the replicas.")
@click.option("--enable-thinking/--disable-thinking", default=None, help="Thinking mode for reasoning models.")
@click.option("--model-path", help="Local GGUF file or model directory.")
@click.option(
    "--lora",
    "loras",
    multiple=True,
    metavar="NAME=PATH[:SCALE]",
    help="LoRA adapter to load with the model (repeatable); requests pick it with model NAME.",
)
@click.option(
    "--download-hub",
    type=click.Choice(["huggingface", "modelscope", "csghub"]),
    help="Hub to download from (default: $XINFERENCE_MODEL_SRC).",
)
@click.option(
    "--virtual-env-package",
    "venv_packages",
    multiple=True,
    metavar="REQ",
    help="Extra package for the model's virtual environment (repeatable).",
)
@click.option(
    "--enable-virtual-env/--disable-virtual-env", default=None, help="Run the model in its own virtual environment."
)
@click.option("--no-wait", is_flag=True, help="Return once the launch has started.")
@click.option("--dry-run", is_flag=True, help="Print where each replica would go and start nothing.")
@endpoint_option
@json_option
@click.pass_context
def launch(ctx: click.Context, /, **kw: Any) -> None:
    """Launch a model. Extra --name value pairs are engine options (e.g. --n_ctx 4096)."""
    if not kw["model_name"] and not kw["model_path"]:
        raise click.UsageError("give --model-name or --model-path")
    body: dict[str, Any] = {
        "model_name": kw["model_name"],
        "model_type": kw["model_type"],
        "model_uid": kw["model_uid"],
        "model_engine": kw["model_engine"],
        "model_format": kw["model_format"],
        "model_size_in_billions": kw["size_in_billions"],
        "quantization": kw["quantization"],
        "replica": kw["replica"],
        "n_gpu": None if kw["n_gpu"] in ("0", "cpu", "none") else kw["n_gpu"],
        "gpu_idx": [int(i) for i in kw["gpu_idx"].split(",")] if kw["gpu_idx"] else None,
        "worker_ip": kw["worker_ip"],
        "envs": dict(kw["envs"]) or None,
        "enable_thinking": kw["enable_thinking"],
        "model_path": kw["model_path"],
        "download_hub": kw["download_hub"],
        "virtual_env_packages": list(kw["venv_packages"]) or None,
        "enable_virtual_env": kw["enable_virtual_env"],
    }
    if kw["loras"]:
        from xinf.adapters import parse_cli

        try:
            body["peft_model_config"] = {"lora_list": [parse_cli(v) for v in kw["loras"]]}
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    body = {k: v for k, v in body.items() if v is not None or k == "n_gpu"}
    body.update(parse_extra(ctx.args))
    params = {"wait_ready": "false"} if kw["no_wait"] else None
    if kw["dry_run"]:
        params = {"dry_run": "true"}
    api = client(kw["endpoint"], kw["api_key"], timeout=None)
    if params is None and not kw["as_json"]:  # waiting: show the download's progress meanwhile
        from xinf.cli.progress import launch_with_progress

        uid = kw["model_uid"] or kw["model_name"]
        result = launch_with_progress(api, client(kw["endpoint"], kw["api_key"]), body, uid)
    else:
        result = api.post("/v1/models", json=body, params=params)
    if kw["dry_run"] and not kw["as_json"]:
        print_plan(result)
        return
    if kw["as_json"]:
        echo_json(result)
        return
    uid = result["model_uid"]
    if kw["no_wait"]:
        click.echo(f"launching {uid}")
        return
    model = api.get(f"/v1/models/{uid}")
    click.echo(
        f"{uid} is ready: {model['model_name']} ({model['model_format']}) on {model['model_engine']}, "
        f"{model['replica']} replica(s)"
    )


def print_plan(plan: dict[str, Any]) -> None:
    from xinf.units import format_bytes

    click.echo(
        f"{plan['model_uid']}: {plan['model_name']} ({plan['model_format']} {plan['quantization']}) "
        f"on {plan['model_engine']}; nothing started"
    )
    rows = []
    nodes = any(r.get("node") for r in plan["replicas"])
    for r in plan["replicas"]:
        est = r.get("estimate") or {}
        devices = ", ".join(f"GPU {d}" for d in r.get("devices", [])) or "CPU"
        reserved = ", ".join(format_bytes(b) for b in r.get("reserved", [])) or "-"
        layers = f"{r['gpu_layers']}/{est.get('total_layers', '?')}" if r.get("gpu_layers") is not None else "-"
        total = format_bytes(est["weights"] + est["kv_cache"] + est["overhead"]) if est else "unknown"
        node = [(r.get("node") or "")[:12]] if nodes else []
        host = format_bytes(r["host"]) if r.get("host") else "-"
        cores = replica_cores([r])
        rows.append((r.get("replica", 0), *node, devices, reserved, layers, host, cores, total))
    headers = ["REPLICA", *(["NODE"] if nodes else []), "DEVICES", "RESERVED", "GPU LAYERS", "HOST MEMORY", "CORES"]
    headers.append("ESTIMATE")
    click.echo(render(headers, rows))


@cli.command("add-replica")
@click.argument("model_uid")
@click.option("-r", "--replica", default=1, show_default=True, type=int, help="How many to add.")
@endpoint_option
@json_option
def add_replica(model_uid: str, replica: int, endpoint: str, api_key: str | None, as_json: bool) -> None:
    """Add replicas to a running model."""
    result = client(endpoint, api_key, timeout=None).post(f"/v1/models/{model_uid}/replicas", json={"replica": replica})
    if as_json:
        echo_json(result)
        return
    click.echo(f"added replica(s) {', '.join(map(str, result['replicas']))} to {model_uid}")


@cli.command("remove-replica")
@click.argument("model_uid")
@click.argument("replica_id", type=int)
@endpoint_option
@json_option
def remove_replica(model_uid: str, replica_id: int, endpoint: str, api_key: str | None, as_json: bool) -> None:
    """Stop one replica of a running model."""
    result = client(endpoint, api_key, timeout=60).delete(f"/v1/models/{model_uid}/replicas/{replica_id}")
    if as_json:
        echo_json(result)
        return
    click.echo(f"removed replica {replica_id} of {model_uid}; {result['remaining_replicas']} remain")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("-n", "--model-name", help="Built-in or registered model name.")
@click.option("--model-path", help="Local model file (a GGUF file) or directory.")
@click.option("-en", "--model-engine", help="Engine to ask (default: the one a launch would choose).")
@click.option("-f", "--model-format", help="pytorch, ggufv2, gptq, awq, fp8, fp4, bnb or mlx.")
@click.option("-s", "--size-in-billions", help="Model size in billions of parameters.")
@click.option("-q", "--quantization", help="Quantization, as listed by the model's family.")
@click.option("-c", "--context-length", type=int, help="Context size (the engine's n_ctx option).")
@click.option(
    "--gpu-memory",
    multiple=True,
    metavar="SIZE",
    help="Free memory of a device, e.g. 8GiB; repeat for several (default: this machine's devices).",
)
@json_option
@click.pass_context
def estimate(ctx: click.Context, /, **kw: Any) -> None:
    """Estimate a model's memory and GPU layers, without a server and without loading it.

    Extra --name value pairs are engine options, as for launch (e.g. --n_parallel 1 --cache_type_k q8_0).
    """
    from xinf.cli.estimate import run

    options = parse_extra(ctx.args)
    if kw["context_length"] is not None:
        options["n_ctx"] = kw["context_length"]
    run(
        model_name=kw["model_name"],
        model_path=kw["model_path"],
        model_engine=kw["model_engine"],
        model_format=kw["model_format"],
        size_in_billions=kw["size_in_billions"],
        quantization=kw["quantization"],
        gpu_memory=kw["gpu_memory"],
        options=options,
        as_json=kw["as_json"],
    )


@cli.command("list")
@endpoint_option
@json_option
def list_models(endpoint: str, api_key: str | None, as_json: bool) -> None:
    """List running models."""
    data = client(endpoint, api_key).get("/v1/models")["data"]
    if as_json:
        echo_json(data)
        return
    loras = [(m["id"], m["parent"], m.get("root")) for m in data if m.get("parent")]
    data = [m for m in data if not m.get("parent")]
    if not data:
        click.echo("no models running")
        return
    rows = [
        (
            m["id"],
            m["model_name"],
            m["model_engine"],
            m["model_format"],
            m.get("model_size_in_billions"),
            m.get("quantization"),
            f"{sum(1 for r in m.get('replicas', []) if r['status'] == 'ready')}/{m['replica']}",
            replica_cores(m.get("replicas", [])),
            m["status"] + (f": {m['error']}" if m.get("error") else ""),
        )
        for m in data
    ]
    click.echo(render(["UID", "NAME", "ENGINE", "FORMAT", "SIZE(B)", "QUANT", "REPLICAS", "CORES", "STATUS"], rows))
    if loras:
        click.echo()
        click.echo(render(["ADAPTER", "MODEL", "PATH"], loras))


def replica_cores(replicas: list[dict[str, Any]]) -> str:
    """Each replica's CPU cores, ``0-1 | 2-3``; ``-`` where cores are not placed."""
    from xinf.cores import ranges

    return " | ".join(ranges(r.get("cores") or []) or "-" for r in replicas) or "-"


@cli.command()
@click.argument("model_uid")
@endpoint_option
@json_option
def terminate(model_uid: str, endpoint: str, api_key: str | None, as_json: bool) -> None:
    """Stop a running model and free its memory."""
    result = client(endpoint, api_key, timeout=60).delete(f"/v1/models/{model_uid}")
    if as_json:
        echo_json(result)
        return
    click.echo(f"terminated {model_uid}")


# ---------------------------------------------------------------- engines


@cli.command()
@click.option("--model", "model_name", help="Show which engines can serve this model, and why not.")
@endpoint_option
@json_option
def engines(model_name: str | None, endpoint: str, api_key: str | None, as_json: bool) -> None:
    """List installed engines (and the reason when one is broken)."""
    params = {"model": model_name} if model_name else None
    data = client(endpoint, api_key).get("/v1/engines", params=params)
    if as_json:
        echo_json(data)
        return
    if model_name:
        matches = []
        for m in data["matches"]:
            specs = [spec_label(s) for s in m["specs"]]
            if specs:
                said = f"{len(specs)} spec{'s' if len(specs) != 1 else ''}: {', '.join(dict.fromkeys(specs))}"
            else:
                said = "; ".join(dict.fromkeys(m["reasons"]))
            matches.append((m["engine"], m["available"], said))
        click.echo(render(["ENGINE", "AVAILABLE", "SPECS OR REASON"], matches))
        return
    rows = [
        (e["name"], e.get("version") or "-", e.get("distribution") or "-", "ok" if e["ok"] else f"broken: {e['error']}")
        for e in data["engines"]
    ]
    click.echo(render(["ENGINE", "VERSION", "PACKAGE", "STATUS"], rows))


def spec_label(spec: dict[str, Any]) -> str:
    """``ggufv2 0.5B q4_k_m``: format, size when known, quantization."""
    size = spec.get("size_in_billions")
    return " ".join(
        str(p) for p in (spec["format"], f"{size}B" if size is not None else None, spec["quantization"]) if p
    )


# ---------------------------------------------------------------- registrations


@cli.command()
@click.option("--file", "path", required=True, type=click.Path(exists=True, dir_okay=False), help="Model JSON.")
@click.option("-t", "--model-type", default="LLM", show_default=True, type=click.Choice(MODEL_TYPES))
@click.option("--persist", is_flag=True, help="Keep the registration across restarts.")
@endpoint_option
@json_option
def register(path: str, model_type: str, persist: bool, endpoint: str, api_key: str | None, as_json: bool) -> None:
    """Register a custom model from a JSON file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        model = json.loads(text)
    except ValueError as exc:
        raise click.ClickException(f"{path} is not valid JSON: {exc}") from None
    result = client(endpoint, api_key).post(
        f"/v1/model_registrations/{model_type}", json={"model": model, "persist": persist}
    )
    if as_json:
        echo_json(result)
        return
    click.echo(f"registered {result['model_name']}" + (" (persisted)" if persist else ""))


@cli.command()
@click.argument("model_name")
@click.option("-t", "--model-type", default="LLM", show_default=True, type=click.Choice(MODEL_TYPES))
@endpoint_option
@json_option
def unregister(model_name: str, model_type: str, endpoint: str, api_key: str | None, as_json: bool) -> None:
    """Remove a custom model registration."""
    result = client(endpoint, api_key).delete(f"/v1/model_registrations/{model_type}/{model_name}")
    if as_json:
        echo_json(result)
        return
    click.echo(f"unregistered {model_name}")


@cli.command()
@click.option("-t", "--model-type", default=None, help="LLM, embedding, rerank, ... (default: every type)")
@click.option("--all", "show_all", is_flag=True, help="Include built-in models (the catalogue).")
@click.option("-s", "--search", default=None, help="Only names containing this text.")
@click.option("-a", "--ability", default=None, help="Only models with this ability (chat, embed, reasoning, ...).")
@endpoint_option
@json_option
def registrations(
    model_type: str | None,
    show_all: bool,
    search: str | None,
    ability: str | None,
    endpoint: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """List registered models (custom ones; --all adds built-ins), searchable by name, type and ability."""
    http = client(endpoint, api_key)
    types = [model_type] if model_type else ["LLM", "embedding", "rerank", "audio", "image"]
    data = [m for t in types for m in http.get(f"/v1/model_registrations/{t}", params={"detailed": "true"})]
    if not show_all:
        data = [m for m in data if not m["is_builtin"]]
    if search:
        data = [m for m in data if search.lower() in m["model_name"].lower()]
    if ability:
        data = [m for m in data if ability.lower() in (a.lower() for a in m.get("abilities", []))]
    if as_json:
        echo_json(data)
        return
    if not data:
        click.echo(
            "no models match"
            if search or ability
            else "no custom models registered" + ("" if show_all else " (--all shows built-ins)")
        )
        return
    rows = []
    for m in data:
        formats = sorted({s["format"] for s in m.get("specs", [])})
        rows.append((m["model_name"], m.get("model_type", model_type), m["is_builtin"], formats, m.get("abilities")))
    click.echo(render(["NAME", "TYPE", "BUILTIN", "FORMATS", "ABILITIES"], rows))


# ---------------------------------------------------------------- devices


@cli.command()
@endpoint_option
@json_option
def devices(endpoint: str, api_key: str | None, as_json: bool) -> None:
    """Show accelerators, their free memory and what replicas reserved."""
    from xinf.units import format_bytes

    data = client(endpoint, api_key).get("/v1/cluster/devices")
    if as_json:
        echo_json(data)
        return
    nodes = data.get("nodes") or []
    if nodes:
        rows = [
            (
                n["id"][:12],
                n["address"],
                n["hostname"] + (" (this server)" if n["local"] else ""),
                n["cpu_count"],
                f"{format_bytes(n['memory_available'])} / {format_bytes(n['memory_total'])}",
                ", ".join(n["replicas"]) or "-",
            )
            for n in nodes
        ]
        click.echo(render(["NODE", "ADDRESS", "HOST", "CPUS", "MEMORY FREE/TOTAL", "REPLICAS"], rows))
        if not data["devices"]:
            click.echo("no GPU on any node")
            return
        click.echo("")
    elif not data["devices"]:
        click.echo(
            f"no GPU: CPU only ({data['cpu_count']} cores, {format_bytes(data['memory_available'])} of "
            f"{format_bytes(data['memory_total'])} memory available)"
        )
        return
    rows = [
        (
            *([(d["node"] or "")[:12]] if nodes else []),
            d["index"],
            d["name"],
            format_bytes(d["total_memory"]),
            format_bytes(d["free_memory"]),
            format_bytes(d["reserved"]),
            format_bytes(d["available"]),
            ", ".join(d["replicas"]) or "-",
        )
        for d in data["devices"]
    ]
    headers = ["GPU", "NAME", "TOTAL", "FREE", "RESERVED", "AVAILABLE", "REPLICAS"]
    click.echo(render(["NODE", *headers] if nodes else headers, rows))


ops.register(cli)  # cached, remove-cache, virtualenvs
cli.add_command(catalog)  # catalog import


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
