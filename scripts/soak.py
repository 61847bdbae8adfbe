#!/usr/bin/env python3
"""The soak: the release server under load while its processes are SIGKILLed at random moments,
then every check that says nothing was lost, duplicated or left behind. scripts/soak.sh runs it
(twice side by side: without and with the `leak` fault); run it alone for one variant:

    python3 scripts/soak.py --bin target/release --seconds 180 [--leak-mb 1] [--json FILE]

Phases:
  1. kills (--seconds): 6 conversations take streamed turns without pause; every few seconds one
     of the server child, the crash monitor or the standalone collector is SIGKILLed (some of the
     child kills aimed right after a journal rotation; segments are 32 KiB). A killed monitor is
     replaced at once, while its orphaned child is still shutting down (the bounded start-lock
     wait); a killed child takes its monitor with it and is restarted; a killed collector is
     restarted.
  2. verdict (--verdict-seconds, default 330): the last boot lives on under the same load so
     `dispatchctl mem` has the 5 minutes it needs for a verdict; only the collector is killed.
  3. checks: load stopped, then against the running server every conversation reads back
     consistent; then the server and collector are stopped, a final drain runs, and
       - every complete journal line is in the traces DB exactly once (per boot and seq; a torn
         line is allowed only as the last line of a segment of a boot that was killed),
       - boots.records, the hourly rollups and the attribution rollups count each line once,
       - no process of the soak is left,
       - `dispatchctl mem --boot all --check` on the soak's journal: no LEAK, or with --leak-mb
         it must find the LEAK.
Exit 0 only when every check holds. Nothing leaves 127.0.0.1.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

RECORD_TABLES = ("samples", "conversation_memory", "turn_starts", "turn_ends", "crashes",
                 "exits", "panics", "errors", "events")
SEQ_BITS = 40


def log(name, msg):
    print(f"[{time.strftime('%H:%M:%S')}] soak {name}: {msg}", flush=True)


class Soak:
    def __init__(self, args):
        self.args = args
        self.name = "leak" if args.leak_mb else "control"
        self.rng = random.Random(args.seed)
        self.var = tempfile.mkdtemp(prefix=f"dispatch-soak-{self.name}.", dir=args.dir)
        self.token = "soak-" + os.urandom(8).hex()
        self.bin = os.path.abspath(args.bin)
        self.addr = None            # current server address, None while restarting
        self.api = None             # API token
        self.monitor = None         # Popen of the current server (its monitor)
        self.child_pid = None       # the serving child's pid (from /health)
        self.collector = None       # Popen of the standalone collector
        self.lock = threading.Lock()
        self.stop_load = threading.Event()
        self.kills = {"child": 0, "monitor": 0, "collector": 0}
        self.kill_log = []
        self.rotation_kills = 0     # child kills aimed right after a segment rotation
        self.start_waits = []       # seconds each start after a monitor kill took
        self.boots = 0
        self.acked = {}             # conversation -> [turn ids the client saw end `ok`]
        self.created = []           # conversations the server acknowledged (201)
        self.turns_ok = 0
        self.turn_failures = 0      # connection errors or refusals (kills): expected
        self.disconnects = 0
        self.failures = []          # check failures
        self.server_err = open(os.path.join(self.var, "server.stderr"), "ab")
        self.collector_err = open(os.path.join(self.var, "collector.stderr"), "ab")

    # ---- processes ----------------------------------------------------------------------

    def start_server(self):
        addr_file = os.path.join(self.var, "addr")
        if os.path.exists(addr_file):
            os.unlink(addr_file)
        cmd = [os.path.join(self.bin, "dispatch-server"), "--var-dir", self.var,
               "--addr", "127.0.0.1:0", "--addr-file", addr_file, "--no-collector",
               "--admin-token", self.token, "--journal-segment-bytes", "32768",
               "--journal-budget-bytes", str(4 << 30), "--sample-interval-ms", "250",
               "--conversation-memory-interval-ms", "2000", "--sim-tokens-per-sec", "4000",
               "--shutdown-grace-ms", "2000"]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.server_err,
                                stdin=subprocess.DEVNULL)
        # The bounded start-lock wait is 10 s by default; allow it plus start-up.
        while time.monotonic() - started < 20:
            if proc.poll() is not None:
                raise SoakError(f"the server exited {proc.returncode} at start; see "
                                f"{self.var}/server.stderr")
            try:
                with open(addr_file) as f:
                    addr = f.read().strip()
                if addr:
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        else:
            raise SoakError("no address file 20 s after start")
        health = http_json(addr, "GET", "/health")[1]
        with open(os.path.join(self.var, "api-token")) as f:
            api = f.read().strip()
        if self.args.leak_mb:
            # The fault lives in memory: every boot is armed again, for worker 0's conversation.
            if not self.created:
                status, c = http_json(addr, "POST", "/v1/conversations", None, api)
                if status != 201:
                    raise SoakError(f"creating the leaking conversation answered {status}")
                self.created.append(c["id"])
                self.acked[c["id"]] = []
            body = {"mb_per_turn": self.args.leak_mb, "conversation": self.created[0]}
            status = http_json(addr, "POST", "/admin/fault/leak", body, self.token)[0]
            if status != 200:
                raise SoakError(f"the leak fault was refused ({status})")
        with self.lock:
            self.monitor, self.child_pid, self.api, self.addr = proc, health["pid"], api, addr
        self.boots += 1
        return time.monotonic() - started

    def start_collector(self):
        cmd = [os.path.join(self.bin, "dispatch-collector"), "--var-dir", self.var, "--follow",
               "--no-progress", "--retention-days", "0"]
        self.collector = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                          stderr=self.collector_err, stdin=subprocess.DEVNULL)

    def kill(self, target):
        with self.lock:
            if target == "collector":
                pid = self.collector.pid
            elif target == "monitor":
                pid = self.monitor.pid
            else:
                pid = self.child_pid
            if target != "collector":
                self.addr = None
            monitor = self.monitor
        os.kill(pid, signal.SIGKILL)
        self.kills[target] += 1
        self.kill_log.append((round(time.monotonic() - self.t0, 1), target, pid))
        if target == "collector":
            self.collector.wait()
            self.start_collector()
            return
        if target == "child":
            # The monitor reports the child's death and dies of the same signal.
            code = monitor.wait(timeout=15)
            if code != -signal.SIGKILL:
                self.fail(f"the monitor exited {code} after its child was SIGKILLed, not of SIGKILL")
        else:
            monitor.wait()
        # A monitor kill restarts at once: the orphaned child still holds the store.
        waited = self.start_server()
        if target == "monitor":
            self.start_waits.append(round(waited, 2))
        if target == "monitor" and waited > 12:
            self.fail(f"a start after a monitor kill took {waited:.1f} s (bounded wait is 10 s)")

    def newest_segment(self):
        try:
            names = sorted(n for n in os.listdir(os.path.join(self.var, "journal"))
                           if n.endswith(".ndjson"))
        except FileNotFoundError:
            return None
        return names[-1] if names else None

    def killer(self, until):
        """Phase 1: kills at random moments until `until` (monotonic)."""
        mean = self.args.kill_every
        while time.monotonic() < until:
            time.sleep(self.rng.uniform(0.3 * mean, 1.7 * mean))
            if time.monotonic() >= until:
                break
            target = self.rng.choices(["child", "monitor", "collector"], [4, 3, 3])[0]
            if target == "child" and self.rng.random() < 0.5:
                # Aim at a rotation: wait (bounded) for a new segment, then kill at once.
                before = self.newest_segment()
                deadline = time.monotonic() + 5
                while self.newest_segment() == before and time.monotonic() < deadline:
                    time.sleep(0.005)
                if self.newest_segment() != before:
                    self.rotation_kills += 1
            self.kill(target)

    # ---- load ---------------------------------------------------------------------------

    def worker(self, i):
        rng = random.Random(self.args.seed * 1000 + i)
        conv = self.created[0] if i == 0 and self.created else None
        while not self.stop_load.is_set():
            with self.lock:
                addr, api = self.addr, self.api
            if addr is None:
                time.sleep(0.05)
                continue
            try:
                if conv is None:
                    status, body = http_json(addr, "POST", "/v1/conversations", None, api)
                    if status != 201:
                        raise OSError(f"create answered {status}")
                    conv = body["id"]
                    with self.lock:
                        self.created.append(conv)
                        self.acked[conv] = []
                time.sleep(rng.uniform(0, 2 * self.args.think))
                disconnect = rng.random() < 0.05
                outcome, turn = stream_turn(addr, api, conv, f"size:{rng.randint(200, 6000)}",
                                            disconnect)
                if outcome == "ok":
                    with self.lock:
                        self.acked[conv].append(turn)
                        self.turns_ok += 1
                elif outcome == "disconnected":
                    self.disconnects += 1
                    time.sleep(0.3)   # its turn goes on; the next one would find it running
                else:
                    self.turn_failures += 1
                    time.sleep(0.05)
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                self.turn_failures += 1
                time.sleep(0.05)

    # ---- checks -------------------------------------------------------------------------

    def fail(self, msg):
        log(self.name, "FAIL: " + msg)
        self.failures.append(msg)

    def check_conversations(self):
        """Every conversation the server acknowledged reads back consistent."""
        turns_checked = sealed = 0
        for conv in self.created:
            status, c = http_json(self.addr, "GET", f"/v1/conversations/{conv}", None, self.api)
            if status != 200:
                self.fail(f"conversation {conv} (acknowledged 201) reads back {status}")
                continue
            if c["status"] != "idle":
                self.fail(f"conversation {conv} is {c['status']} with no turn running")
            turns = {t["id"]: t for t in c["turns_list"]}
            if c["turns"] != len(turns):
                self.fail(f"conversation {conv}: turns = {c['turns']} but {len(turns)} listed")
            for t in c["turns_list"]:
                turns_checked += 1
                if t["status"] == "running":
                    self.fail(f"turn {t['id']} of {conv} is still running")
                if t["status"] == "sealed":
                    sealed += 1
            by_turn = {}
            last_id = 0
            for m in c["messages"]:
                if m["id"] <= last_id:
                    self.fail(f"conversation {conv}: message ids out of order at {m['id']}")
                last_id = m["id"]
                if m.get("turn") not in turns:
                    self.fail(f"conversation {conv}: message {m['id']} names unknown turn {m.get('turn')}")
                by_turn.setdefault(m.get("turn"), []).append(m)
            for turn in self.acked.get(conv, []):
                t = turns.get(turn)
                if t is None or t["status"] != "ok":
                    self.fail(f"turn {turn} of {conv} ended ok on the wire but the store has "
                              f"{t['status'] if t else 'no such turn'}")
                    continue
                roles = [m["role"] for m in by_turn.get(turn, [])]
                partial = [m["id"] for m in by_turn.get(turn, []) if m["partial"]]
                if roles[:1] != ["user"] or "assistant" not in roles or partial:
                    self.fail(f"turn {turn} of {conv} (ok) has messages {roles}, partial {partial}")
        return turns_checked, sealed

    def check_journal_against_db(self):
        """Every complete journal line is in the traces DB exactly once."""
        journal = os.path.join(self.var, "journal")
        lines = {}        # boot -> {seq: kind}
        dup_lines = torn = 0
        torn_where = []
        for name in sorted(os.listdir(journal)):
            if not name.endswith(".ndjson"):
                continue
            with open(os.path.join(journal, name), "rb") as f:
                data = f.read()
            parts = data.split(b"\n")
            for k, raw in enumerate(parts):
                if not raw:
                    continue
                last = k == len(parts) - 1       # no newline after it: torn by a kill
                try:
                    v = json.loads(raw)
                    boot, seq = v["boot"], v["seq"]
                except (ValueError, KeyError, TypeError):
                    v = None
                if last or v is None:
                    torn += 1
                    torn_where.append((name, k + 1, last))
                    continue
                per = lines.setdefault(boot, {})
                if seq in per:
                    dup_lines += 1
                per[seq] = v["kind"]
        db = sqlite3.connect(f"file:{self.var}/traces.db?mode=ro", uri=True)
        boots = dict(db.execute("SELECT boot, boot_no FROM boots"))
        records = dict(db.execute("SELECT boot_no, records FROM boots"))
        rows = {}
        for table in RECORD_TABLES:
            for (key,) in db.execute(f"SELECT id FROM {table}"):
                rows.setdefault(key >> SEQ_BITS, []).append(key & ((1 << SEQ_BITS) - 1))
        headers = {}
        for boot_no, seq in db.execute("SELECT boot_no, header_seq FROM segments"):
            headers.setdefault(boot_no, []).append(seq)
        ingest_errors = db.execute("SELECT file_name, line_no, code, reason FROM ingest_errors").fetchall()
        sample_rows = db.execute("SELECT count(*) FROM samples").fetchone()[0]
        rollup_samples = db.execute("SELECT coalesce(sum(samples), 0) FROM rollup_hourly").fetchone()[0]
        # The attribution rollups (schema 3) count each turn record once too.
        rollup_turns = db.execute("SELECT coalesce(sum(turns), 0), coalesce(sum(ended), 0) "
                                  "FROM rollup_conversation").fetchone()
        raw_turns = db.execute("SELECT (SELECT count(*) FROM turn_starts), (SELECT count(*) "
                               "FROM turn_ends WHERE coalesce(outcome, '') <> 'sealed')").fetchone()
        # Turns are paired by key at ingest (schema 4): no end may wait for a start that is
        # stored and still open, and every pair points both ways.
        unpaired = db.execute(
            "SELECT count(*) FROM turn_ends e WHERE e.start_id IS NULL AND e.turn IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM turn_starts s WHERE s.end_id IS NULL "
            "AND s.conversation IS e.conversation AND s.turn = e.turn)").fetchone()[0]
        one_way = db.execute(
            "SELECT count(*) FROM turn_starts s JOIN turn_ends e ON e.id = s.end_id "
            "WHERE e.start_id IS NOT s.id").fetchone()[0]
        db.close()

        missing = extra = duplicated = 0
        checked = 0
        for boot, per in lines.items():
            checked += len(per)
            if boot not in boots:
                self.fail(f"boot {boot} ({len(per)} lines in the journal) is not in the traces DB")
                missing += len(per)
                continue
            boot_no = boots[boot]
            body_rows = rows.get(boot_no, [])
            in_db = body_rows + headers.get(boot_no, [])
            duplicated += len(in_db) - len(set(in_db))
            want = set(per)
            got = set(in_db)
            for seq in sorted(want - got)[:5]:
                self.fail(f"boot {boot} seq {seq} ({per[seq]}) is in the journal, not in the DB")
            missing += len(want - got)
            extra += len(got - want)
            # boots.records counts every stored line, segment headers included.
            if records.get(boot_no) != len(per):
                self.fail(f"boot {boot}: boots.records = {records.get(boot_no)}, the journal "
                          f"has {len(per)} lines")
        if extra:
            self.fail(f"{extra} rows in the DB have no line in the journal")
        if duplicated:
            self.fail(f"{duplicated} journal lines are in the DB more than once")
        if dup_lines:
            self.fail(f"{dup_lines} (boot, seq) pairs appear twice in the journal")
        if tuple(rollup_turns) != tuple(raw_turns):
            self.fail(f"rollup_conversation counts {tuple(rollup_turns)} turn starts and ends, the "
                      f"raw tables hold {tuple(raw_turns)}")
        if unpaired or one_way:
            self.fail(f"turn pairing: {unpaired} ends wait for a stored open start, {one_way} "
                      f"starts point at an end that does not point back")
        if rollup_samples != sample_rows:
            self.fail(f"rollup_hourly counts {rollup_samples} samples, the samples table holds {sample_rows}")
        for boot, per in lines.items():
            # seq is dense within a boot: a hole is a line the writer lost (a torn last line
            # is only ever the boot's newest, so it leaves no hole below the last good one).
            holes = (max(per) + 1) - len(per)
            if holes:
                self.fail(f"boot {boot}: {holes} seq numbers missing from the journal below "
                          f"seq {max(per)}")
        for name, line, last in torn_where:
            if not last:
                self.fail(f"{name} line {line} is unreadable and not the segment's last line")
        for e in ingest_errors:
            log(self.name, f"ingest error (reported, not lost): {e}")
        return {"lines": checked, "boots_in_journal": len(lines), "missing": missing,
                "duplicated": duplicated + dup_lines, "extra": extra, "torn": torn,
                "ingest_errors": len(ingest_errors), "samples": sample_rows}

    def leftovers(self):
        mine = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if self.var.encode() in cmd:
                mine.append((int(pid), cmd.replace(b"\0", b" ").decode(errors="replace")))
        return mine

    def verdict(self):
        out = subprocess.run(
            [os.path.join(self.bin, "dispatchctl"), "--journal", os.path.join(self.var, "journal"),
             "mem", "--boot", "all", "--check", "--color", "never", "--chart-width", "0"],
            capture_output=True, text=True, timeout=300)
        self.mem_txt = (self.args.json[:-len(".json")] if self.args.json and
                        self.args.json.endswith(".json") else os.path.join(self.var, "mem")) + ".mem.txt"
        with open(self.mem_txt, "w") as f:
            f.write(out.stdout + out.stderr)
        return out.returncode, out.stdout

    # ---- the run ------------------------------------------------------------------------

    def run(self):
        a = self.args
        log(self.name, f"var dir {self.var}; kills for {a.seconds} s, then {a.verdict_seconds} s "
                       f"for the verdict{f', leak {a.leak_mb} MiB a turn' if a.leak_mb else ''}")
        self.t0 = time.monotonic()
        self.start_server()
        self.start_collector()
        workers = [threading.Thread(target=self.worker, args=(i,), daemon=True)
                   for i in range(a.conversations)]
        for w in workers:
            w.start()
        self.killer(self.t0 + a.seconds)
        log(self.name, f"kill phase over: {self.kills}; the last boot runs {a.verdict_seconds} s")
        end = time.monotonic() + a.verdict_seconds
        while time.monotonic() < end:
            time.sleep(min(end - time.monotonic(), self.rng.uniform(20, 40)))
            if time.monotonic() < end:
                self.kill("collector")
        self.stop_load.set()
        for w in workers:
            w.join(timeout=60)
        time.sleep(1.0)
        turns_checked, sealed = self.check_conversations()
        # Stop: the server (SIGTERM to its monitor) and the collector, then a final drain.
        self.monitor.send_signal(signal.SIGTERM)
        code = self.monitor.wait(timeout=60)
        if code != 0:
            self.fail(f"the server exited {code} on SIGTERM")
        self.collector.send_signal(signal.SIGTERM)
        self.collector.wait(timeout=60)
        drain = subprocess.run([os.path.join(self.bin, "dispatch-collector"), "--var-dir",
                                self.var, "--no-progress", "--retention-days", "0"],
                               capture_output=True, text=True, timeout=300)
        if drain.returncode != 0:
            self.fail(f"the final drain exited {drain.returncode}: {drain.stderr.strip()}")
        lines = self.check_journal_against_db()
        left = self.leftovers()
        for pid, cmd in left:
            self.fail(f"left over: pid {pid}: {cmd}")
        code, text = self.verdict()
        verdicts, longest = summarize_mem(text)
        if a.leak_mb and code != 3:
            self.fail(f"dispatchctl mem --check exited {code}, not 3: the leak was not found")
        leaky_rank = None
        if a.leak_mb and longest:
            # Attribution: the one leaking conversation must rank first in the LEAK boot.
            boot = longest[0].split()[2]
            out = subprocess.run(
                [os.path.join(self.bin, "dispatchctl"), "--journal",
                 os.path.join(self.var, "journal"), "mem", "--boot", boot, "--json"],
                capture_output=True, text=True, timeout=300)
            try:
                ranked = [c["id"] for c in json.loads(out.stdout)["conversations"]]
                leaky_rank = ranked.index(self.created[0]) + 1 if self.created[0] in ranked else None
            except (ValueError, KeyError, TypeError):
                ranked = None
            if leaky_rank != 1:
                self.fail(f"the leaking conversation {self.created[0]} ranks {leaky_rank} in "
                          f"boot {boot}, not first")
        if not a.leak_mb and code != 0:
            self.fail(f"dispatchctl mem --check exited {code}: it says LEAK with no leak "
                      f"(or failed); see {self.var}/mem.txt")
        summary = {
            "variant": self.name, "seconds": a.seconds, "verdict_seconds": a.verdict_seconds,
            "kills": self.kills, "kills_total": sum(self.kills.values()), "boots": self.boots,
            "rotation_kills": self.rotation_kills,
            "start_after_monitor_kill_s_max": max(self.start_waits, default=None),
            "turns_ok": self.turns_ok, "turn_failures": self.turn_failures,
            "disconnects": self.disconnects, "conversations": len(self.created),
            "turns_checked": turns_checked, "turns_sealed": sealed, **lines,
            "leftover_processes": len(left), "mem_check_exit": code, "mem_verdicts": verdicts,
            "leaking_conversation_rank": leaky_rank,
            "failures": self.failures, "var": self.var,
        }
        log(self.name, json.dumps(summary))
        log(self.name, f"dispatchctl mem --boot all: {verdicts}; the longest boot (every boot "
                       f"in {self.mem_txt}):\n  " + "\n  ".join(longest))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(summary, f, indent=2)
        if sum(self.kills.values()) < a.min_kills:
            self.fail(f"only {sum(self.kills.values())} kills (at least {a.min_kills} asked)")
        return not self.failures


def summarize_mem(text):
    """Verdict counts over the boots of `dispatchctl mem --boot all`, and the report of the boot
    with the most samples (the one long enough for a verdict) up to its evidence's end."""
    blocks, counts = [], {}
    for line in text.splitlines():
        if line.startswith("dispatch boot"):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    for b in blocks:
        v = next((l.split(":", 1)[1].strip() for l in b if l.startswith("verdict:")), "?")
        counts[v] = counts.get(v, 0) + 1

    def samples(b):
        try:
            return int(b[0].rsplit(", ", 2)[-2].split()[0])
        except (IndexError, ValueError):
            return 0
    longest = max(blocks, key=samples, default=[])
    cut = next((i for i, l in enumerate(longest) if l.startswith("conversations")), len(longest))
    return counts, longest[:cut]


class SoakError(Exception):
    pass


def http_json(addr, method, path, body=None, token=None, timeout=10):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None)
    finally:
        conn.close()


def stream_turn(addr, token, conv, message, disconnect):
    """One streamed turn. Returns (outcome, turn id): the `end` event's outcome, `disconnected`
    when this client hung up on purpose, or `refused:<status>` / `cut` (the server was killed)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", f"/v1/conversations/{conv}/turns", json.dumps({"message": message}),
                     {"content-type": "application/json", "accept": "text/event-stream",
                      "authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        if resp.status != 200:
            resp.read()
            return f"refused:{resp.status}", None
        event, turn, tokens = None, None, 0
        while True:
            line = resp.readline()
            if not line:
                return "cut", turn
            line = line.rstrip(b"\r\n")
            if line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data = json.loads(line[5:])
                if event == "turn":
                    turn = data["id"]
                elif event == "token":
                    tokens += 1
                    if disconnect and tokens == 3:
                        return "disconnected", turn
                elif event == "end":
                    return data.get("outcome", "?"), data.get("id", turn)
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", required=True, help="directory of the release binaries")
    p.add_argument("--seconds", type=int, default=180, help="length of the kill phase")
    p.add_argument("--verdict-seconds", type=int, default=330,
                   help="how long the last boot runs unkilled (mem needs 5 minutes)")
    p.add_argument("--kill-every", type=float, default=10.0, help="mean seconds between kills")
    p.add_argument("--min-kills", type=int, default=10)
    p.add_argument("--conversations", type=int, default=6)
    p.add_argument("--think", type=float, default=0.5, help="mean pause between turns, s")
    p.add_argument("--leak-mb", type=int, default=0, help="arm the leak fault (MiB a turn)")
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--dir", default=None, help="where the var directory is made")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--keep", action="store_true", help="keep the var directory of a soak that passed")
    p.add_argument("--recheck", metavar="VAR",
                   help="only run the journal-against-DB check on a kept var directory")
    args = p.parse_args()
    if args.recheck:
        soak = Soak.__new__(Soak)
        soak.name, soak.var, soak.failures = "recheck", os.path.abspath(args.recheck), []
        print(json.dumps(soak.check_journal_against_db()))
        sys.exit(0 if not soak.failures else 1)
    soak = Soak(args)
    log(soak.name, f"seed {args.seed}")
    try:
        ok = soak.run()
    except SoakError as e:
        soak.fail(str(e))
        ok = False
    finally:
        for proc in (soak.monitor, soak.collector):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()
    if ok and not args.keep:
        shutil.rmtree(soak.var, ignore_errors=True)
    log(soak.name, "PASS" if ok else f"FAILED ({len(soak.failures)} checks); var dir kept: {soak.var}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
