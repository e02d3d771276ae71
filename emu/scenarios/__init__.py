"""Built-in scenarios: config files like any other, shipped with the package.

`emu scenarios` lists them with the first comment line of each; `emu run --scenario NAME`
resolves defaults < scenario < --config file < --set < flags.
"""

from importlib import resources


def names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def text(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.toml").read_text()


def summary(name: str) -> str:
    for line in text(name).splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
