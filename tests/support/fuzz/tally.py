"""Counts of the fuzz cases sent, by route and answer, for the end-of-run summary."""

from __future__ import annotations

from collections import Counter


class Tally:
    def __init__(self) -> None:
        self.cases: Counter[tuple[str, int]] = Counter()

    def __bool__(self) -> bool:
        return bool(self.cases)

    def add(self, route: str, status: int) -> None:
        self.cases[route, status] += 1

    def report(self) -> list[str]:
        routes: dict[str, Counter[int]] = {}
        for (route, status), n in self.cases.items():
            routes.setdefault(route, Counter())[status] += n
        lines = []
        width = max([40, *(len(route) for route in routes)])
        for route in sorted(routes):
            answers = ", ".join(f"{s}: {n}" for s, n in sorted(routes[route].items()))
            lines.append(f"{route:{width}} {sum(routes[route].values()):7}  ({answers})")
        total = sum(self.cases.values())
        server_errors = sum(n for (_, s), n in self.cases.items() if s >= 500)
        on_purpose = sum(
            n for (r, s), n in self.cases.items() if s == 503 and "(Temporal down)" in r
        )
        lines.append(
            f"{'total':{width}} {total:7}  (5xx: {server_errors}, of which {on_purpose} are the "
            "503s of Temporal down on purpose)"
        )
        return lines


TALLY = Tally()
