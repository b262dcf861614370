"""Prints the site-packages directory of this interpreter under PREFIX, relative to PREFIX.

Preferred: a directory the interpreter already searches (so that `import ovseg` works after
`cmake --install` without PYTHONPATH), e.g. Debian's /usr/lib/python3/dist-packages for PREFIX=/usr
or /usr/local/lib/python3.11/dist-packages for /usr/local; otherwise the standard scheme's
lib/python3.X/site-packages (then add PREFIX/that to PYTHONPATH).
"""
import os
import site
import sys
import sysconfig

prefix = os.path.normpath(os.path.abspath(sys.argv[1]))
candidates = []
for d in site.getsitepackages():
    d = os.path.normpath(d)
    if d.startswith(prefix + os.sep):
        rel = os.path.relpath(d, prefix)
        # /usr/local/... is not "under /usr" in the sense of the /usr prefix
        if prefix == "/usr" and rel.startswith("local" + os.sep):
            continue
        candidates.append(rel)
if candidates:
    print(candidates[0])
else:
    path = sysconfig.get_path("platlib", "posix_prefix", vars={"base": prefix, "platbase": prefix})
    print(os.path.relpath(path, prefix))
