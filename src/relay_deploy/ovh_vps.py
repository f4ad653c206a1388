"""A VPS in the OVH account: find it, read it, follow OVH's tasks on it, rebuild it.

Reads are always allowed; the writes (display name, rebuild) are only ever made on the VPS
this deployment ordered. OVH refuses actions while its own tasks run on a VPS ("Action not
available while there are running tasks"): callers wait for :meth:`OvhVps.active_tasks` to
empty and retry on :func:`relay_deploy.ovh_api.busy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ovh.exceptions

from relay_deploy.ovh_api import OvhApi

TASK_FAILED = {"error", "cancelled", "blocked"}


class OrderFailed(Exception):
    """OVH did not deliver what was asked (the message says what and what to do)."""


@dataclass(frozen=True)
class Vps:
    name: str
    state: str
    display_name: str
    ip: str

    @property
    def running(self) -> bool:
        return self.state == "running"


class OvhVps:
    def __init__(self, api: OvhApi) -> None:
        self.api = api

    def names(self) -> list[str]:
        return [str(n) for n in self.api.get("/vps")]

    def get(self, name: str) -> Vps | None:
        try:
            info: dict[str, Any] = self.api.get("/vps/{serviceName}", serviceName=name)
        except ovh.exceptions.ResourceNotFoundError:
            return None
        return Vps(name=name, state=str(info.get("state", "")),
                   display_name=str(info.get("displayName") or ""), ip=self.ipv4(name))

    def ipv4(self, name: str) -> str:
        ips: list[str] = self.api.get("/vps/{serviceName}/ips", serviceName=name)
        v4 = [ip for ip in ips if ":" not in ip]
        return v4[0] if v4 else ""

    def find_named(self, display_name: str) -> Vps | None:
        """A running VPS whose display name contains ``display_name`` (never any other VPS:
        installing k3s on an unrelated server would be destructive)."""
        for name in self.names():
            info: dict[str, Any] = self.api.get("/vps/{serviceName}", serviceName=name)
            shown = str(info.get("displayName") or "")
            if info.get("state") == "running" and display_name.lower() in shown.lower():
                return Vps(name=name, state="running", display_name=shown, ip=self.ipv4(name))
        return None

    def set_display_name(self, name: str, display_name: str) -> None:
        self.api.call("PUT", "/vps/{serviceName}", body={"displayName": display_name},
                      serviceName=name)

    def active_tasks(self, name: str) -> list[int]:
        """OVH's tasks on the VPS still to do or being done (``todo`` and ``doing`` are the
        only states the API filters on)."""
        ids: list[int] = []
        for state in ("todo", "doing"):
            ids += [int(i) for i in self.api.get("/vps/{serviceName}/tasks",
                                                 query={"state": state}, serviceName=name)]
        return ids

    def task_state(self, name: str, task_id: int) -> str:
        task: dict[str, Any] = self.api.get("/vps/{serviceName}/tasks/{id}", serviceName=name,
                                            id=task_id)
        return str(task.get("state", ""))

    def image_id(self, name: str, os_name: str) -> str:
        """The id of the image called ``os_name`` that this VPS can be rebuilt with."""
        images: dict[str, str] = {}
        for image_id in self.api.get("/vps/{serviceName}/images/available", serviceName=name):
            info: dict[str, Any] = self.api.get("/vps/{serviceName}/images/available/{id}",
                                                serviceName=name, id=image_id)
            images[str(info.get("name", ""))] = str(info.get("id", image_id))
        for image, ident in images.items():
            if image.lower() == os_name.lower():
                return ident
        raise OrderFailed(f"VPS {name} offers no image {os_name!r} to rebuild with; set vps_os "
                          f"to one of: {', '.join(sorted(images)) or '(none)'}")

    def rebuild(self, name: str, image_id: str, public_key: str) -> int:
        """Start the rebuild (erases the disk); returns OVH's task id. Raises the API error,
        which :func:`relay_deploy.ovh_api.busy` recognises while other tasks run."""
        task: dict[str, Any] = self.api.post(
            "/vps/{serviceName}/rebuild",
            {"imageId": image_id, "publicSshKey": public_key, "doNotSendPassword": True},
            serviceName=name)
        return int(task["id"])
