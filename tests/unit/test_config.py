"""Config resolution and validation: defaults < file < --set < flags, one-line errors."""

import pytest

from emu.config import resolve
from emu.errors import ConfigError


def test_kernel_defaults():
    c = resolve()
    assert c["net.core.netdev_budget"] == 300
    assert c["net.core.netdev_budget_usecs"] == 8000          # 2 jiffies at HZ=250
    assert c["net.core.dev_weight"] == 64
    assert c["net.core.netdev_max_backlog"] == 1000
    assert c["run.hz"] == 250
    assert c.ncpus == 4 and c.nqueues == 4
    assert c["ethtool.rx_ring"] == 512
    assert all(c.rps_mask(q) == 0 for q in range(4))          # RPS off, as the kernel ships
    assert [c.irq_affinity(q) for q in range(4)] == [1, 2, 4, 8]
    assert c["ethtool.rss_indir"] == [i % 4 for i in range(128)]
    assert len(c.rss_key()) == 52


def test_budget_usecs_follows_hz():
    assert resolve(sets=["run.hz=1000"])["net.core.netdev_budget_usecs"] == 2000
    assert resolve(sets=["run.hz=100"])["net.core.netdev_budget_usecs"] == 20000


def test_layers_file_then_set_then_flags():
    text = "[net.core]\nnetdev_budget = 500\n[run]\ncpus = 2\n"
    c = resolve(text, ["net.core.netdev_budget=600"], {"run.cpus": 8, "run.tdf": 20.0})
    assert c["net.core.netdev_budget"] == 600
    assert c.ncpus == 8
    assert c["run.tdf"] == 20.0


def test_sysfs_names_for_rps():
    c = resolve(sets=["sys.class.net.eth0.queues.rx-0.rps_cpus=e",
                      "sys.class.net.eth0.queues.rx-1.rps_flow_cnt=100"])
    assert c.rps_mask(0) == 0xE
    assert c.queue(1)["rps_flow_cnt"] == 128                  # rounded up to a power of two


def test_affinity_list_and_mask_forms():
    c = resolve(sets=["proc.irq.121.smp_affinity_list=0-2"])
    assert c.irq_affinity(1) == 0b111
    assert c["proc.irq.121.smp_affinity"] == "7"


def test_fewer_cpus_keeps_default_affinity_valid():
    c = resolve(flags={"run.cpus": 2})
    assert [c.irq_affinity(q) for q in range(4)] == [1, 2, 1, 2]


@pytest.mark.parametrize("sets, words", [
    (["net.core.netdev_budget=0"], "net.core.netdev_budget must be between 1"),
    (["run.cpus=0"], "run.cpus must be between 1 and 64"),
    (["ethtool.rx_ring=500"], "ethtool.rx_ring must be a power of two"),
    (["proc.irq.120.smp_affinity=10"], "names CPU 4, but the host has CPUs 0-3"),
    (["run.tdf=0.5"], "run.tdf must be 0 (as fast as the host allows) or between 1 and 1e6"),
    (["run.tdf=-1"], "run.tdf must be 0 (as fast as the host allows) or between 1 and 1e6"),
    (["run.duration=5"], "run.duration is emulated time and needs a unit"),
    (["net.core.nosuch=1"], "unknown config key 'net.core.nosuch'"),
    (["net.core.netdev_budget=abc"], "net.core.netdev_budget: expected an integer, got 'abc'"),
    (["sys.class.net.eth0.queues.rx-0.rps_cpus=10"], "names CPU 4"),
    (["sys.class.net.eth0.queues.rx-9.rps_cpus=1"], "no such queue"),
    (["net.core.flow_limit_table_len=1000"], "flow_limit_table_len must be a power of two"),
    (["net.core.netdev_budget_usecs=100"], "net.core.netdev_budget_usecs must be 0"),
    (["ethtool.rx_usecs=0", "ethtool.rx_frames=0"], "cannot both be 0"),
    (["traffic.sources.9.rate_pps=1"], "traffic.sources has indices 0..3"),
    (["udp.sockets.0.reader_cpu=7"], "names CPU 7"),
    (["netdev_budget"], "expected KEY=VALUE"),
])
def test_bad_input_is_one_clear_line(sets, words):
    with pytest.raises(ConfigError) as e:
        resolve(sets=sets)
    msg = str(e.value)
    assert words in msg
    assert "\n" not in msg


def test_bad_file():
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve("[net.core\n", file_name="my.toml")
    with pytest.raises(ConfigError, match="unknown config key 'run.cpu'"):
        resolve("[run]\ncpu = 3\n")
    with pytest.raises(ConfigError, match="run.cpus: expected an integer"):
        resolve("[run]\ncpus = 'four'\n")


def test_file_replaces_source_array():
    c = resolve('[[traffic.sources]]\nname = "only"\nrate_pps = 1000\n')
    assert [s["name"] for s in c["traffic.sources"]] == ["only"]
    assert c["traffic.sources.0.pattern"] == "constant"        # item defaults filled in


def test_config_is_frozen_and_round_trips():
    c = resolve(sets=["net.core.netdev_budget=600"])
    with pytest.raises(AttributeError):
        c.x = 1
    again = resolve(c.to_toml())
    assert again.to_dict() == c.to_dict()


def test_set_adds_a_key_to_a_queue_table_a_file_named_with_other_keys():
    c = resolve('[sys.class.net.eth0.queues.rx-0]\nrps_flow_cnt = 4096\n',
                ["sys.class.net.eth0.queues.rx-0.rps_cpus=f"])
    q = c["sys.class.net.eth0.queues"]["rx-0"]
    assert q["rps_cpus"] == "f" and q["rps_flow_cnt"] == 4096
