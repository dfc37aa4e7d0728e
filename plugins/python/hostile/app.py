"""A hostile Python rule, for the host's containment tests: the `do` setting picks the
attack. `loop` spins forever, `hog` allocates until memory runs out, `raise` raises an
exception that is not a rule error, `probe` tries to read host files and list the root."""

from rulebox_rule import Decision, Failed, Request, export


class Hostile:
    def evaluate(self, req: Request) -> Decision:
        do = req.setting("do", "loop", str)
        if do == "loop":
            n = 0
            while True:
                n += 1
        if do == "hog":
            chunks = []
            while True:
                chunks.append(bytearray(1 << 20))
        if do == "raise":
            raise ValueError("told to raise")
        if do == "probe":
            found = []
            for path in ("/etc/passwd", "/proc/self/environ", "../../../etc/hostname"):
                try:
                    with open(path) as f:
                        found.append(f"{path}: {f.read(64)!r}")
                except OSError as e:
                    found.append(f"{path}: {type(e).__name__}")
            try:
                import os

                found.append(f"/: {os.listdir('/')}")
            except OSError as e:
                found.append(f"/: {type(e).__name__}")
            # Whatever it found goes out as the decision, for the test to inspect.
            return Decision.deny(*found)
        raise Failed(f"unknown `do`: {do}")


WitWorld = export(Hostile)
