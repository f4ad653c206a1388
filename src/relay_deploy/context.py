"""What the phases share: the config as it evolves, the report, waits, the cluster API."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from lightkube.config.kubeconfig import KubeConfig
from rich.console import Console

from relay_deploy import kubeconfig as kcfg
from relay_deploy.config import Advanced, DeployConfig, update_config_file
from relay_deploy.kube import Cluster
from relay_deploy.ovh_api import OvhCredentials
from relay_deploy.report import PhaseFailed, Report, poll_until

Confirm = Callable[[str, str], bool]  # (what is about to happen, the question) -> yes?


def manifests() -> Any:
    """The manifests module (relay_deploy.platform: infra/kubernetes rendered to objects)."""
    from relay_deploy import platform

    return platform


@dataclasses.dataclass
class Context:
    cfg: DeployConfig
    report: Report
    console: Console
    dry_run: bool
    confirm: Confirm
    ovh: OvhCredentials | None = None
    vps_ip: str = ""
    vps_pending: bool = False  # dry run: the VPS would be ordered, so nothing past it exists
    cluster_pending: bool = False  # dry run: k3s would be installed, no API to ask yet
    kube_doc: dict[str, Any] | None = None  # dry run: the kubeconfig we would have written
    accept_iroh_digest: str = ""  # --accept-iroh-relay-digest: the moved tag's new digest
    _cluster: Cluster | None = None

    @property
    def adv(self) -> Advanced:
        return self.cfg.advanced

    def save(self, **updates: str) -> None:
        """Record values in the config file (never in a dry run) and in memory."""
        if not self.dry_run:
            update_config_file(self.cfg.path, updates)
        self.cfg = self.cfg.updated(**updates)

    def cluster(self) -> Cluster | None:
        """The cluster API, or None in a dry run where it would only exist after this run."""
        if self._cluster is not None:
            return self._cluster
        if self.cluster_pending or self.vps_pending:
            return None
        if self.kube_doc is not None:
            conf = KubeConfig.from_dict(self.kube_doc).get(context_name=kcfg.CONTEXT)
            if conf is not None:
                from lightkube import Client

                self._cluster = Cluster(Client(config=conf, field_manager="relay-deploy",
                                               trust_env=False))
                return self._cluster
        path = kcfg.kubeconfig_path()
        if not kcfg.has_context(path):
            if self.dry_run:
                self.cluster_pending = True
                return None
            raise PhaseFailed(f"no {kcfg.CONTEXT} context in {path}; run "
                              f"`./infra/deploy --phase kubeconfig` first")
        self._cluster = Cluster.from_kubeconfig(path)
        return self._cluster

    def wait(self, what: str, check: Callable[[], Any]) -> Any:
        return poll_until(self.console, what, check, timeout=self.adv.wait_timeout_seconds,
                          interval=self.adv.poll_seconds)

    def wait_ovh(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """Poll OVH (at ``advanced.vps_poll_seconds``) until ``check`` is truthy or ``timeout``."""
        return poll_until(self.console, what, check, timeout=timeout,
                          interval=self.adv.vps_poll_seconds)

    def say(self, text: str) -> None:
        self.console.print(f"  {text}", highlight=False)
