"""Check release files before they are uploaded (the release job runs it on the artefacts of
every build; .ci/run runs it on the sdist and the repaired wheel it built).

    python .ci/release_check.py --tag v0.1.0 [--complete] FILE...

- the tag is "v" + the package's version (lec6fast/_version.py), and every file carries it;
- CHANGELOG.md has a section "## [<version>]" with at least one entry;
- `twine check --strict` passes on every file;
- with --complete: one sdist and a wheel for every CPython and platform the release promises
  (WHEEL_PYTHONS x WHEEL_PLATFORMS, the same list as pyproject.toml's [tool.cibuildwheel] and
  .github/workflows/wheels.yml's runners).
Exit status 1 with one line per problem.
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEEL_PYTHONS = ("cp310", "cp311", "cp312", "cp313", "cp314", "cp315", "cp314t", "cp315t")
WHEEL_PLATFORMS = ("manylinux_x86_64", "manylinux_aarch64", "macosx_x86_64", "macosx_arm64",
                   "win_amd64")


def package_version():
    text = (ROOT / "lec6fast" / "_version.py").read_text()
    return re.search(r'__version__\s*=\s*"([^"]+)"', text).group(1)


def changelog_problems(version):
    path = ROOT / "CHANGELOG.md"
    if not path.is_file():
        return ["CHANGELOG.md is missing"]
    sections = re.split(r"^## ", path.read_text(), flags=re.M)
    for section in sections[1:]:
        head, _, body = section.partition("\n")
        if head.startswith(f"[{version}]"):
            if not re.search(r"^\s*- \S", body, flags=re.M):
                return [f"CHANGELOG.md: the section for {version} has no entry ('- ...')"]
            return []
    return [f"CHANGELOG.md has no section '## [{version}]' for the version being released"]


def file_problems(files, version, complete):
    problems, wheels = [], set()
    sdists = [f for f in files if f.name.endswith(".tar.gz")]
    for f in files:
        if f.name.endswith(".whl"):
            name, ver, *_, pytag, abi, plat = f.name[:-4].split("-")
            if ver != version:
                problems.append(f"{f.name}: version {ver}, expected {version}")
            for platform in WHEEL_PLATFORMS:
                os_, _, arch = platform.partition("_")
                if plat.startswith(os_) and plat.endswith(arch):
                    wheels.add((abi, platform))
        elif f.name.endswith(".tar.gz"):
            if f.name != f"lec6fast-{version}.tar.gz":
                problems.append(f"{f.name}: expected lec6fast-{version}.tar.gz")
        else:
            problems.append(f"{f.name}: neither a wheel nor an sdist")
    if complete:
        if len(sdists) != 1:
            problems.append(f"expected one sdist, found {len(sdists)}")
        missing = [f"{py}-{plat}" for plat in WHEEL_PLATFORMS for py in WHEEL_PYTHONS
                   if (py, plat) not in wheels]
        if missing:
            problems.append(f"no wheel for {', '.join(missing)}")
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", required=True, help="the git tag being released, e.g. v0.1.0")
    ap.add_argument("--complete", action="store_true",
                    help="require the sdist and every promised wheel")
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv)

    version = package_version()
    problems = []
    if args.tag != f"v{version}":
        problems.append(f"the tag {args.tag!r} is not 'v' + the package version {version!r}")
    problems += changelog_problems(version)
    problems += file_problems(args.files, version, args.complete)
    twine = subprocess.run([sys.executable, "-m", "twine", "check", "--strict",
                            *map(str, args.files)], capture_output=True, text=True)
    if twine.returncode:
        problems.append("twine check --strict failed:\n" + twine.stdout + twine.stderr)
    for p in problems:
        print(f"release check: {p}")
    if not problems:
        print(f"release check: {len(args.files)} files of lec6fast {version} ready for {args.tag}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
