"""Check that the installers' lock file agrees with pyproject.toml, in well under a second, offline:

    python packaging/check_lock.py              # the lock against pyproject.toml (CI runs this)
    python packaging/check_lock.py --installed  # also: this Python has exactly the lock's versions

The installers are built from packaging/requirements-installer.txt (made by packaging/lock.sh), not
from whatever PyPI has on the day. This script fails, one sentence a problem, when:

* a requirement of pyproject.toml's dependencies, or of the extras the installers carry (hf, timm,
  packaging), has no pin in the lock, or its pin does not satisfy pyproject's specifier (someone changed
  pyproject.toml and did not run packaging/lock.sh);
* torch or torchvision is pinned in the lock to anything but the version pyproject.toml pins;
* a pin has no --hash (pip's --require-hashes would refuse the whole file);
* with --installed: a package the lock pins is missing from this Python or has another version
  (build_linux.sh runs this before building, so a bundle is never built from another set).

Standard library only, plus the `packaging` library, which every pip carries (pip._vendor.packaging)
when it is not installed itself. Exit status: 0 agreed, 1 a disagreement, 2 a file missing or unreadable.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
except ImportError:  # a bare virtual environment: pip's own copy of the same library
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
LOCK = REPO / "packaging" / "requirements-installer.txt"
# The extras the installers carry (the packaging extra names the other two through batchlens[hf,timm]).
INSTALLER_EXTRAS = ("hf", "timm", "packaging")
# Versions that must be exactly pyproject's: the bundle is tested with these (docs/packaging.md).
EXACT = ("torch", "torchvision")
# The platform the lock is made for (packaging/lock.sh: Linux x86_64, CPython 3.11): requirement
# markers are judged for it, not for the machine this check runs on.
LOCK_ENVIRONMENT = {
    "implementation_name": "cpython",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": "3.11.7",
    "python_version": "3.11",
    "sys_platform": "linux",
    "os_name": "posix",
}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


class LockFileError(Exception):
    """A file the check needs is missing or cannot be read; the message is one sentence."""


def read_lock(lock: Path) -> dict[str, tuple[str, int]]:
    """{canonical name: (version, number of --hash entries)} from a pip requirements file of pins."""
    try:
        text = lock.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or exc
        raise LockFileError(f"{lock}: cannot be read ({reason}); make it with packaging/lock.sh.") from None
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().removesuffix("\\").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            if current is None:
                raise LockFileError(f"{lock}, line {number}: a --hash with no pin above it.")
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
            continue
        if line.startswith("-"):  # an option line (--index-url and the like): not a pin
            current = None
            continue
        match = _PIN.match(line)
        if not match:
            raise LockFileError(f"{lock}, line {number}: {line!r} is not a NAME==VERSION pin.")
        name = canonicalize_name(match.group(1))
        if name in pins:
            raise LockFileError(f"{lock}, line {number}: {name} is pinned twice.")
        pins[name] = (match.group(3), line.count("--hash="))  # hashes may also follow on this line
        current = name
    return pins


def installer_requirements(pyproject: Path) -> list[Requirement]:
    """pyproject's dependencies and the installer extras, with batchlens[...] self-references expanded."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise LockFileError(f"{pyproject}: cannot be read as a project file ({exc}).") from None
    own = canonicalize_name(project["name"])
    extras = project.get("optional-dependencies", {})
    wanted, seen, queue = [], set(), [(None, text) for text in project.get("dependencies", [])]
    for extra in INSTALLER_EXTRAS:
        if extra not in extras:
            raise LockFileError(f"{pyproject}: has no extra {extra!r}, which the installers carry.")
        queue += [(extra, text) for text in extras[extra]]
    while queue:
        extra, text = queue.pop(0)
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise LockFileError(f"{pyproject}: {text!r} is not a valid requirement ({exc}).") from None
        if canonicalize_name(requirement.name) == own:  # batchlens[hf,timm]: those extras' requirements
            for named in sorted(requirement.extras):
                queue += [(named, more) for more in extras.get(named, [])]
            continue
        key = str(requirement)
        if key not in seen:
            seen.add(key)
            wanted.append(requirement)
    return wanted


def check(pyproject: Path = PYPROJECT, lock: Path = LOCK) -> list[str]:
    """Every disagreement between the lock and pyproject.toml, one sentence each (empty: they agree)."""
    pins = read_lock(lock)
    problems = []
    environment = {**default_environment(), **LOCK_ENVIRONMENT}
    for requirement in installer_requirements(pyproject):
        if requirement.marker is not None and not requirement.marker.evaluate({**environment, "extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(
                f"{lock.name} has no pin for {requirement.name}, which pyproject.toml requires "
                f"({requirement}); run packaging/lock.sh."
            )
            continue
        version = pins[name][0]
        try:
            satisfied = requirement.specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            satisfied = False
        if not satisfied:
            problems.append(
                f"{lock.name} pins {requirement.name}=={version}, which pyproject.toml's "
                f"{requirement} does not allow; run packaging/lock.sh."
            )
        elif name in EXACT and str(requirement.specifier) != f"=={version}":
            problems.append(
                f"{lock.name} pins {requirement.name}=={version} but pyproject.toml pins "
                f"{requirement.specifier}; they must be the same version."
            )
    for name in EXACT:
        if name not in {canonicalize_name(r.name) for r in installer_requirements(pyproject)}:
            problems.append(
                f"pyproject.toml does not pin {name}, which the installers must have at one version."
            )
    unhashed = sorted(name for name, (_, hashes) in pins.items() if hashes == 0)
    if unhashed:
        problems.append(
            f"{lock.name} has no --hash for {', '.join(unhashed)}, so pip --require-hashes would refuse "
            f"it; run packaging/lock.sh."
        )
    return problems


def check_installed(lock: Path = LOCK) -> list[str]:
    """Every package the lock pins that this Python lacks or has at another version, one sentence each."""
    from importlib.metadata import PackageNotFoundError, version

    problems = []
    for name, (pinned, _) in sorted(read_lock(lock).items()):
        try:
            installed = version(name)
        except PackageNotFoundError:
            problems.append(f"{name}=={pinned} (pinned in {lock.name}) is not installed in {sys.executable}.")
            continue
        if Version(installed) != Version(pinned):
            problems.append(f"{name} is {installed} in {sys.executable}, but {lock.name} pins {pinned}.")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(arg not in ("--installed",) for arg in args):
        print("usage: python packaging/check_lock.py [--installed]", file=sys.stderr)
        return 2
    try:
        problems = check()
        if "--installed" in args and not problems:
            problems = check_installed()
            if problems:
                problems.append(
                    f"Install the lock's set first: {sys.executable} -m pip install --require-hashes "
                    f"--no-deps -r packaging/requirements-installer.txt"
                )
    except LockFileError as exc:
        print(f"check_lock.py: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"check_lock.py: {problem}", file=sys.stderr)
    if problems:
        return 1
    what = "pyproject.toml and this Python" if "--installed" in args else "pyproject.toml"
    print(f"check_lock.py: {LOCK.name} agrees with {what} ({len(read_lock(LOCK))} pins).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
