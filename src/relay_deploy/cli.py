"""``./infra/deploy``: from an OVHcloud account to a running metadata-relay.

Exit codes: 0 success, 1 a phase or check failed, 2 bad invocation or configuration (before
any remote call), 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO, cast

import typer
from rich.console import Console
from rich.table import Table

from relay_deploy.config import DEFAULT_CONFIG, ConfigError, DeployConfig, load_config
from relay_deploy.report import PHASES, Redacting

if TYPE_CHECKING:
    from relay_deploy.ovh_api import OvhCredentials

app = typer.Typer(add_completion=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _default_config() -> Path:
    repo_config = Path(__file__).resolve().parents[2] / "infra" / "config.yaml"
    if DEFAULT_CONFIG.exists() or not repo_config.parent.is_dir():
        return DEFAULT_CONFIG
    return repo_config


def select_phases(only: list[str], skip: list[str]) -> list[str]:
    bad = [p for p in [*only, *skip] if p not in PHASES]
    if bad:
        raise ConfigError([f"unknown phase {p!r}; phases are {', '.join(PHASES)}" for p in bad])
    chosen = [p for p in PHASES if (not only or p in only) and p not in skip]
    if not chosen:
        raise ConfigError(["--phase/--skip leave no phase to run"])
    return chosen


def _confirm_factory(console: Console, yes: bool) -> Callable[[str, str], bool]:
    def confirm(summary: str, question: str) -> bool:
        console.print(f"[bold yellow]About to {summary}.[/bold yellow]")
        if yes:
            console.print(f"  --yes given: {question.rstrip('?').lower()} without asking")
            return True
        console.print(f"{question} [y/N] ", end="", markup=False)
        try:
            answer = sys.stdin.readline()
        except (OSError, ValueError):
            answer = ""
        return answer.strip().lower() in ("y", "yes")

    return confirm


@app.callback(invoke_without_command=True,
              help="Deploy metadata-relay: from an OVHcloud account to https://relay.<domain> "
                   "with k3s, Traefik, cert-manager, external-dns and Argo CD. Idempotent: run "
                   "it again at any time; a second run changes nothing. `ovh-token` gets an "
                   "OVH consumer key with exactly the rights the tool needs.")
def deploy(
    context: typer.Context,
    phase: Annotated[list[str] | None, typer.Option(
        "--phase", metavar="PHASE",
        help="Run only this phase (repeatable): vps, kubeconfig, kubernetes, app, verify. "
             "Default: all, in that order.")] = None,
    skip: Annotated[list[str] | None, typer.Option(
        "--skip", metavar="PHASE", help="Skip this phase (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan (every change and why) using only read calls; "
                          "change nothing, order nothing, write no file.")] = False,
    status: Annotated[bool, typer.Option(
        "--status", help="Print one table: VPS, node, platform components, certificate, DNS, "
                         "health, TURN. Changes nothing.")] = False,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Deployment config (default infra/config.yaml; see "
                         "infra/config.yaml.example).")] = None,
    ovh_config: Annotated[Path | None, typer.Option(
        "--ovh-config", help="python-ovh INI file with the API credentials. Default: the first "
                             "of infra/ovh.conf, ./ovh.conf, ~/.config/ovh.conf, ~/.ovh.conf, "
                             "then the OVH_* environment variables.")] = None,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Do not ask before spending money (ordering a VPS) or erasing "
                            "the VPS this deployment ordered (rebuilding it).")] = False,
    accept_iroh_relay_digest: Annotated[str, typer.Option(
        "--accept-iroh-relay-digest", metavar="DIGEST",
        help="The iroh relay's tag moved on its registry: confirm its new digest "
             "(sha256:..., as the stopped run printed it) and record it as the new pin.")
    ] = "",
) -> None:
    if context.invoked_subcommand is not None:
        return
    hidden: list[str] = []  # secrets, shared by both streams
    out_stream, err_stream = Redacting(sys.stdout, hidden), Redacting(sys.stderr, hidden)
    # (typeshed's IO[str] is not io.TextIOBase, which is what Console needs)
    console = Console(file=cast(TextIO, out_stream), highlight=False)
    err = Console(file=cast(TextIO, err_stream), highlight=False)
    try:
        from relay_deploy.ovh_api import load_ovh_credentials

        phases = select_phases(phase or [], skip or [])
        cfg = load_config(config or _default_config())
        check_accept(accept_iroh_relay_digest, cfg, phases)
        out_stream.hide(*cfg.secrets())
        ovh: OvhCredentials | None = None
        if status:
            try:
                ovh = load_ovh_credentials(ovh_config)
            except ConfigError:
                ovh = None
        else:
            own_server = bool(cfg.vps_ip and not cfg.vps_name and not cfg.vps_order_id)
            if "vps" in phases and not own_server:
                ovh = load_ovh_credentials(ovh_config)
            elif not cfg.vps_ip and any(p in phases for p in ("kubeconfig", "verify")):
                raise ConfigError(["vps_ip: empty in the config; run the vps phase first "
                                   "(or do not --skip it)"])
        if ovh is not None:
            out_stream.hide(ovh.application_secret, ovh.consumer_key)
    except ConfigError as exc:
        for line in exc.problems:
            err.print(f"error: {line}", soft_wrap=True)
        raise typer.Exit(2) from None

    if status:
        from relay_deploy.status import gather, print_status

        rows = gather(cfg, ovh)
        print_status(console, rows)
        raise typer.Exit(1 if any(ok is False for _, ok, _ in rows) else 0)
    raise typer.Exit(_run(console, err, cfg, ovh, phases, dry_run=dry_run, yes=yes,
                          accept=accept_iroh_relay_digest))


def check_accept(digest: str, cfg: DeployConfig, phases: list[str]) -> None:
    """--accept-iroh-relay-digest needs a digest, the iroh relay and the app phase."""
    if not digest:
        return
    from relay_deploy.registry import check_digest

    problems = []
    try:
        check_digest(digest)
    except ValueError as exc:
        problems.append(f"--accept-iroh-relay-digest: {exc}")
    if not cfg.iroh_relay_enabled:
        problems.append("--accept-iroh-relay-digest: iroh_relay_enabled is false in the config")
    if "app" not in phases:
        problems.append("--accept-iroh-relay-digest: the app phase pins the iroh relay; do not "
                        "skip it")
    if problems:
        raise ConfigError(problems)


def _run(console: Console, err: Console, cfg: DeployConfig, creds: OvhCredentials | None,
         phases: list[str], *, dry_run: bool, yes: bool, accept: str = "") -> int:
    import lightkube
    import ovh.exceptions

    from relay_deploy.context import Context
    from relay_deploy.ovh_vps import OrderFailed
    from relay_deploy.phases import run_phases, summary_lines
    from relay_deploy.report import PhaseFailed, Report
    from relay_deploy.ssh import SshError

    report = Report(console, dry_run=dry_run)
    ctx = Context(cfg=cfg, report=report, console=console, dry_run=dry_run,
                  confirm=_confirm_factory(console, yes), ovh=creds,
                  accept_iroh_digest=accept)
    mode = "DRY RUN (read-only): " if dry_run else ""
    console.print(f"[bold]{mode}metadata-relay deploy[/bold] — {cfg.relay_host}; phases: "
                  f"{', '.join(phases)}")
    try:
        run_phases(ctx, phases)
    except KeyboardInterrupt:
        err.print("interrupted (an open OVH cart was deleted; a placed order is stored in the "
                  "config as vps_order_id and followed by the next run)")
        return 130
    except (PhaseFailed, SshError, OrderFailed) as exc:
        err.print(f"error: {exc}", soft_wrap=True)
        return 1
    except ovh.exceptions.APIError as exc:
        err.print(f"error: OVH API: {exc}", soft_wrap=True)
        return 1
    except lightkube.ApiError as exc:
        err.print(f"error: Kubernetes API: {exc.status.message}", soft_wrap=True)
        return 1
    except OSError as exc:
        err.print(f"error: {exc}", soft_wrap=True)
        return 1
    n = len(report.changes())
    if dry_run:
        console.print(f"\n[bold]Plan:[/bold] {n} change{'s' if n != 1 else ''} "
                      f"({'nothing to do' if n == 0 else 'run without --dry-run to apply'})")
        return 0
    console.print(f"\n[bold green]Done[/bold green]: {n} change{'s' if n != 1 else ''}"
                  f"{' (nothing to do: already deployed)' if n == 0 else ''}")
    if phases == list(PHASES):
        table = Table(title="metadata-relay", show_header=False)
        for k, v in summary_lines(ctx.cfg, ctx.vps_ip or ctx.cfg.vps_ip):
            table.add_row(k, v)
        console.print(table)
    return 0


@app.command("ovh-token")
def ovh_token(
    ovh_config: Annotated[Path | None, typer.Option(
        "--ovh-config", help="python-ovh INI file holding endpoint, application_key and "
                             "application_secret; the new consumer_key is written there. "
                             "Default: the first of infra/ovh.conf, ./ovh.conf, "
                             "~/.config/ovh.conf, ~/.ovh.conf.")] = None,
) -> None:
    """Ask OVH for a consumer key with exactly the rights the tool needs, store it in the OVH
    config file, and print the URL where you validate it (log in, choose "Unlimited")."""
    import ovh.exceptions

    from relay_deploy.ovh_api import (
        load_ovh_credentials,
        request_consumer_key,
        store_consumer_key,
    )
    from relay_deploy.ovh_rights import rules_text

    hidden: list[str] = []
    console = Console(file=cast(TextIO, Redacting(sys.stdout, hidden)), highlight=False)
    err = Console(file=cast(TextIO, Redacting(sys.stderr, hidden)), highlight=False)
    try:
        creds = load_ovh_credentials(ovh_config, need_consumer_key=False)
        if creds.source == "environment":
            raise ConfigError(["OVH credentials come from OVH_* variables: put endpoint, "
                               "application_key and application_secret in infra/ovh.conf (or "
                               "pass --ovh-config) so the new consumer key can be stored"])
    except ConfigError as exc:
        for line in exc.problems:
            err.print(f"error: {line}", soft_wrap=True)
        raise typer.Exit(2) from None
    hidden += [creds.application_secret]
    try:
        answer = request_consumer_key(creds)
    except ovh.exceptions.APIError as exc:
        err.print(f"error: OVH API: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    consumer_key, url = str(answer.get("consumerKey", "")), str(answer.get("validationUrl", ""))
    if not consumer_key or not url:
        err.print("error: OVH answered the consumer-key request without a key or URL")
        raise typer.Exit(1)
    hidden.append(consumer_key)
    store_consumer_key(Path(creds.source), creds.endpoint, consumer_key)
    console.print(f"Requested a consumer key with these rights (one per call the tool makes):"
                  f"\n{rules_text()}\n\nStored it in {creds.source} ([{creds.endpoint}] "
                  f"consumer_key). Validate it now: open\n\n  {url}\n\nlog in, and "
                  f"choose the validity you want. Then run ./infra/deploy --dry-run.",
                  soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
