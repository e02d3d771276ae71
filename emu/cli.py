"""The `emu` command: run an emulated host, list scenarios, show the config, clean a run.

Exit status: 0 success; 1 a run that finished but failed its conservation check, or another
error; 2 bad input (config, knob, command line, run directory, manifest: nothing was
started or touched); 3 a process of the emulated host crashed (the run was stopped and
cleaned up); 4 a protocol mismatch; 128 + N ended by signal N: 130 Ctrl-C (SIGINT), 143
SIGTERM, 129 SIGHUP (a run that was under way still prints and writes its report).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tomllib
import traceback

from . import config as config_mod
from . import scenarios
from .errors import ConfigError, EmuError
from .kcache import Interrupted

EPILOG = """\
KEY=VALUE pairs for --set use the kernel's names, e.g.
  net.core.netdev_budget=600            (/proc/sys/net/core/netdev_budget)
  sys.class.net.eth0.queues.rx-0.rps_cpus=e
  proc.irq.121.smp_affinity_list=0-1     (RX queue q's vector is IRQ irq.base + q)
  ethtool.rx_usecs=8   cost.netif_receive=500   traffic.sources.0.rate_pps=1e6
`emu config` prints every key with its default value.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emu", description="An inspectable emulator of the Linux "
                                "network receive path: one OS process per emulated CPU.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run an emulated host and print its report",
                       description="Start a NIC process and one process per emulated CPU, send "
                       "traffic for --duration of emulated time (and --set run.drain=... more for "
                       "the queues to drain), stop, and report. The processes keep one emulated "
                       "time between them, so the figures do not depend on how busy this host "
                       "is; the run takes whatever wall time that needs. The live "
                       "kernel-format tree is in RUN_DIR/proc and RUN_DIR/sys; the report is "
                       "also written to RUN_DIR/report.json.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_args(r)
    r.add_argument("--run-dir", help="where the tree, manifest, config and report go "
                   "(default: runs/<run-id>)")
    r.add_argument("--no-progress", action="store_true", help="no progress lines")
    r.add_argument("--check", action="store_true", help="check the config, the run directory "
                   "and the shared memory it needs, then exit without starting anything")
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks on errors")

    c = sub.add_parser("config", help="print the resolved config as TOML",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_args(c)

    sub.add_parser("scenarios", help="list the built-in scenarios")

    sub.add_parser("compile", help="compile the receive-path kernels into the cache now "
                   "(a run does it once by itself; this is for images and CI)",
                   description="Compile every numba kernel once into the versioned cache "
                   "($EMU_NUMBA_CACHE, default ~/.cache/emu/numba). Later runs only load it.")

    cl = sub.add_parser("clean", help="stop the processes and remove the shared memory a run's "
                        "manifest names")
    cl.add_argument("run_dir", help="the run directory holding manifest.json")
    return p


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="a TOML config file (overrides the defaults)")
    p.add_argument("--scenario", metavar="NAME", help="a built-in scenario (see `emu scenarios`)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override one key (repeatable); see below")
    p.add_argument("--cpus", type=int, help="emulated CPUs (run.cpus, default 4)")
    p.add_argument("--duration", metavar="TIME",
                   help="emulated time of traffic with a unit, e.g. 200ms or 2s (run.duration, "
                        "default 400ms); the run takes whatever wall time the host needs")
    p.add_argument("--tdf", type=float, metavar="N",
                   help="pace cap: emulated time runs at most wall time / N, for watching live "
                        "(run.tdf, default 0: as fast as the host allows)")
    p.add_argument("--seed", type=int, help="run seed (run.seed)")


def resolve_args(args) -> config_mod.Config:
    layers = []
    if args.scenario:
        if args.scenario not in scenarios.names():
            raise ConfigError(f"--scenario {args.scenario!r}: no such scenario "
                              f"(built in: {', '.join(scenarios.names()) or 'none'})")
        layers.append((scenarios.text(args.scenario), f"scenario {args.scenario}"))
    if args.config:
        layers.append((_read_config(args.config), args.config))
    text = _stack(layers)
    flags = {"run.cpus": args.cpus, "run.duration": args.duration, "run.tdf": args.tdf,
             "run.seed": args.seed}
    if getattr(args, "run_dir", None):
        flags["run.run_dir"] = args.run_dir
    return config_mod.resolve(text, args.set, flags, file_name=layers[-1][1] if layers else "config")


def _read_config(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(16 << 20)
    except IsADirectoryError:
        raise ConfigError(f"--config {path}: is a directory, not a TOML file") from None
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte 0x{data[e.start]:02x} at "
                          f"offset {e.start}); a TOML file must be UTF-8") from None


def _stack(layers: list[tuple[str, str]]) -> str | None:
    """Merge scenario and file (file wins) into one TOML text for resolve()."""
    if not layers:
        return None
    if len(layers) == 1:
        return layers[0][0]
    merged: dict = {}
    for text, name in layers:
        try:
            _deep_merge(merged, tomllib.loads(text))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{name}: not valid TOML: {e}") from None
    return config_mod.dumps_toml(merged)


def _deep_merge(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v


def cmd_scenarios() -> int:
    for n in scenarios.names():
        print(f"{n:<16} {scenarios.summary(n)}")
    return 0


def cmd_clean(run_dir: str) -> int:
    from . import lifecycle
    for line in lifecycle.clean(lifecycle.load(run_dir)):
        print(line)
    return 0


def cmd_compile() -> int:
    from . import kcache
    from .run import SIGNALS, Stop
    stop = Stop()
    old = {s: signal.signal(s, stop) for s in SIGNALS}
    try:
        done = kcache.ensure_compiled(lambda line: print(f"emu: {line}", file=sys.stderr,
                                                         flush=True), stop.requested)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if not done:
        print(f"emu: the kernels are already compiled in {kcache.cache_dir()}", file=sys.stderr)
    return 0


def cmd_run(args) -> int:
    cfg = resolve_args(args)
    from .cluster import Cluster
    from .run import exit_status, run
    if args.check:
        Cluster(cfg, cfg["run.run_dir"] or None)     # checks the run directory and the size
        print("emu: the config, the run directory and the shared memory it needs are fine",
              file=sys.stderr)
        return 0
    rep = run(cfg, cfg["run.run_dir"] or None, progress=False if args.no_progress else None)
    status = exit_status(rep)
    if status == 1:
        print(f"emu: conservation check failed: {rep['conservation']['unaccounted']} "
              f"frames unaccounted", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    debug = args.debug
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "compile":
            return cmd_compile()
        if args.command == "config":
            print(resolve_args(args).to_toml(), end="")
            return 0
        if args.command == "scenarios":
            return cmd_scenarios()
        if args.command == "clean":
            return cmd_clean(args.run_dir)
        parser.print_help()
        return 2
    except Interrupted as e:
        print(f"emu: {signal.Signals(e.signum).name} while preparing the run: stopped; nothing "
              f"ran and nothing was left behind", file=sys.stderr)
        return e.exit_status
    except EmuError as e:
        if debug:
            traceback.print_exc()
        print(f"emu: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        return 1


if __name__ == "__main__":
    sys.exit(main())
