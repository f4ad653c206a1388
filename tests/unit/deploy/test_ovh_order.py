"""Order configuration from what OVH gives (allowed values, or not), and the catalogue check."""

from __future__ import annotations

from pathlib import Path

import ovh.exceptions
import pytest

from relay_deploy.ovh_api import busy, outcome_unknown, store_consumer_key
from relay_deploy.ovh_order import Catalogue, VpsOrders, match
from relay_deploy.ovh_vps import OrderFailed


@pytest.mark.parametrize(("allowed", "wanted", "got"), [
    (["EU-WEST-SBG", "EU-WEST-GRA"], "SBG", "EU-WEST-SBG"),
    (["EU-WEST-SBG"], "eu-west-sbg", "EU-WEST-SBG"),
    (["US-EAST-VA", "US-WEST-OR"], "us east va", "US-EAST-VA"),
    (["Ubuntu 24.04", "Ubuntu 22.04"], "ubuntu 24.04", "Ubuntu 24.04"),
    (["Ubuntu 24.04 - Docker"], "Ubuntu 24.04", None),  # never a looser image
    (["EU-WEST-SBG"], "US-EAST-VA", None),
    ([], "SBG", None),
])
def test_match(allowed: list[str], wanted: str, got: str | None) -> None:
    assert match(allowed, wanted) == got


def _configure(required: list[dict], **kw: object) -> list[tuple[str, str, str]]:
    orders = VpsOrders(api=None)  # type: ignore[arg-type]
    args = {"datacenter": "SBG", "os_name": "Ubuntu 24.04", "extra": {},
            "catalogue": {"vps_datacenter": ["EU-WEST-SBG"], "vps_os": ["Ubuntu 24.04"]}} | kw
    return [(c.label, c.value, c.note) for c in orders.configure(required, **args)]


def test_required_configurations_get_sensible_values() -> None:
    required = [
        {"label": "vps_datacenter", "required": True, "allowedValues": ["EU-WEST-SBG"]},
        {"label": "vps_os", "required": True, "allowedValues": None},  # not given: catalogue
        {"label": "vps_install_rtm", "required": True},  # not given anywhere
        {"label": "vps_single", "required": True, "allowedValues": ["only"]},
        {"label": "vps_optional", "required": False, "allowedValues": ["a", "b"]},
    ]
    assert _configure(required) == [
        ("vps_datacenter", "EU-WEST-SBG", ""),
        ("vps_os", "Ubuntu 24.04", ""),
        ("vps_install_rtm", "no",
         "OVH gives no allowed values for vps_install_rtm; sending 'no' as configured"),
        ("vps_single", "only", ""),
    ]


def test_unknown_required_configuration_names_the_setting() -> None:
    required = [{"label": "vps_zone", "required": True, "allowedValues": ["a", "b"]}]
    with pytest.raises(OrderFailed, match=r"vps_order_configuration: \{vps_zone: \.\.\.\}"):
        _configure(required)
    assert _configure(required, extra={"vps_zone": "b"}) == [("vps_zone", "b", "")]
    with pytest.raises(OrderFailed, match=r"vps_order_configuration.vps_zone: 'c' is not "):
        _configure(required, extra={"vps_zone": "c"})


def test_datacentre_not_offered_lists_the_offer() -> None:
    required = [{"label": "vps_datacenter", "required": True,
                 "allowedValues": ["US-EAST-VA", "US-WEST-OR"]}]
    with pytest.raises(OrderFailed, match=r"vps_datacenter: 'SBG' is not offered .*US-EAST-VA"):
        _configure(required)


def test_catalogue_problems() -> None:
    cat = Catalogue({"vps-2025-model1": {"vps_datacenter": ["US-EAST-VA"],
                                         "vps_os": ["Ubuntu 24.04"]}})
    assert cat.problems("vps-2025-model1", "US-EAST-VA", "Ubuntu 24.04") == []
    assert cat.problems("vps-x", "US-EAST-VA", "Ubuntu 24.04")[0].startswith("vps_plan: 'vps-x'")
    problems = cat.problems("vps-2025-model1", "SBG", "Arch")
    assert problems[0].startswith("vps_datacenter: 'SBG' is not offered for vps-2025-model1")
    assert problems[1].startswith("vps_os: 'Arch' is not offered")
    assert cat.problems("vps-2025-model1", "", "Ubuntu 24.04") == [
        "vps_datacenter: empty; set it to one of: US-EAST-VA"]


class _Response:
    def __init__(self, code: int) -> None:
        self.status_code = code
        self.headers: dict[str, str] = {}


def test_error_kinds() -> None:
    refusal = ovh.exceptions.BadParametersError(
        "Action not available while there are running tasks on the VPS", response=_Response(400))
    assert busy(refusal) and not outcome_unknown(refusal)
    assert outcome_unknown(ovh.exceptions.APIError("boom", response=_Response(502)))
    assert outcome_unknown(ovh.exceptions.HTTPError("Low HTTP request failed error"))
    assert not busy(ovh.exceptions.BadParametersError("Invalid imageId", response=_Response(400)))


@pytest.mark.parametrize(("text", "expect"), [
    ("[default]\nendpoint=ovh-eu\n\n[ovh-eu]\napplication_key=a\nconsumer_key=old\n# end\n",
     "[default]\nendpoint=ovh-eu\n\n[ovh-eu]\napplication_key=a\nconsumer_key=NEW\n# end\n"),
    ("; notes\n[default]\nendpoint=ovh-eu\n[ovh-eu]\napplication_key=a\n[other]\nx=1\n",
     "; notes\n[default]\nendpoint=ovh-eu\n[ovh-eu]\nconsumer_key=NEW\napplication_key=a\n"
     "[other]\nx=1\n"),
    ("[default]\nendpoint=ovh-eu\n", "[default]\nendpoint=ovh-eu\n\n[ovh-eu]\nconsumer_key=NEW\n"),
])
def test_store_consumer_key_keeps_the_rest(tmp_path: Path, text: str, expect: str) -> None:
    conf = tmp_path / "ovh.conf"
    conf.write_text(text)
    store_consumer_key(conf, "ovh-eu", "NEW")
    assert conf.read_text() == expect
    assert (conf.stat().st_mode & 0o777) == 0o600
