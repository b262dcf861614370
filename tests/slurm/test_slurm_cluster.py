#!/usr/bin/env python3
"""ovseg on a real Slurm: a single-node cluster (Debian's slurm-wlm + munge) started by this test
in a temporary directory, with its own config, ports and munge socket.

1. The fixture eval as a 3-task array (tools/slurm/ovseg-eval.sbatch, --shard auto) and the merge
   as a dependent job (--dependency=afterok): the merged metrics equal a single-process run's.
2. The same array again; part-way through, one task is cancelled (scancel on its index) and
   requeued, one gets the time-limit warning (USR1) and requeues itself, one is requeued as a
   preempted task is (scontrol requeue while it runs): all resume from their checkpoints and the
   merged metrics are again identical.
3. `ovseg segment --shard auto` as an array (tools/slurm/ovseg-segment.sbatch, --array=1-3) over a
   folder tree: every image's output exists, written by exactly one task.

Every daemon the test starts is stopped by its PID, and the test fails if anything it started is
still running. Exit 77 (ctest: skipped) with the reason when the Slurm or munge programs, root, the
built ovseg, the test bundle or ../shared are missing, or when the daemons cannot start here.

Environment (set by ctest): OVSEG_BIN, OVSEG_TEST_BUNDLE_DIR, OVSEG_SHARED_DIR, OVSEG_SOURCE_DIR.
"""
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("OVSEG_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
SHARED = os.environ.get("OVSEG_SHARED_DIR", os.path.join(SOURCE_DIR, "..", "shared", "ovseg"))
BIN = os.environ.get("OVSEG_BIN", "")
BUNDLE = os.path.join(os.environ.get("OVSEG_TEST_BUNDLE_DIR", ""), "tiny_swin_vit")
FIXTURE_IMAGE = os.path.join(SHARED, "fixtures", "tiny_swin_vit", "image.png")
PRESETS = os.path.join(SHARED, "class_lists.json")
SLURM_TOOLS = os.path.join(SOURCE_DIR, "tools", "slurm")
SKIP = 77
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("munge", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
TASKS = 3
HEADLINE_KEYS = ("mIoU", "mIoU_gt_classes", "fwIoU", "mACC", "pACC")


class Skip(Exception):
    pass


class Failure(Exception):
    pass


def log(msg):
    print(f"[slurm] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def die_with_parent():
    """In the child before exec: the kernel sends SIGTERM when this test process dies, so the
    daemons never outlive the test, even when ctest kills it at a timeout."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


class Cluster:
    """munged, slurmctld and slurmd in the foreground (-F / -D) as children of this process."""

    def __init__(self, base):
        self.base = base
        self.procs = {}  # name -> Popen
        self.conf = os.path.join(base, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        for k in list(self.env):
            if k.startswith("SLURM_") and k != "SLURM_CONF":
                del self.env[k]  # this test may itself run inside a Slurm job

    def start(self):
        b = self.base
        os.chmod(b, 0o755)  # munged wants the socket's directories searchable by everyone
        for d in ("munge", "state", "spool", "log"):
            os.makedirs(os.path.join(b, d), mode=0o755, exist_ok=True)
        keydir = os.path.join(b, "munge-key")
        os.makedirs(keydir, mode=0o700)
        self.key = os.path.join(keydir, "munge.key")
        with open(os.open(self.key, os.O_WRONLY | os.O_CREAT, 0o400), "wb") as f:
            f.write(os.urandom(1024))
        self.socket = os.path.join(b, "munge", "munge.socket")
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--socket=" + self.socket,
                "--key-file=" + self.key,
                "--pid-file=" + os.path.join(b, "munge", "munged.pid"),
                "--seed-file=" + os.path.join(b, "munge", "munged.seed"),
                "--log-file=" + os.path.join(b, "log", "munged.log"),
            ],
        )
        self._wait_for(lambda: os.path.exists(self.socket), "munged", 15)

        host = socket.gethostname().split(".")[0]
        ctld_port, d_port = free_ports(2)
        cpus = os.cpu_count() or 1
        with open("/proc/meminfo") as f:
            mem_mb = int(f.readline().split()[1]) // 1024
        with open(self.conf, "w") as f:
            f.write(
                f"""# written by tests/slurm/test_slurm_cluster.py for one test run
ClusterName=ovsegtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool
SlurmctldPidFile={b}/slurmctld.pid
SlurmdPidFile={b}/slurmd.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
KillWait=15
InactiveLimit=0
MinJobAge=600
NodeName=ovsegnode NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={int(mem_mb * 0.9)} State=UNKNOWN
PartitionName=test Nodes=ovsegnode Default=YES MaxTime=INFINITE State=UP
"""
            )
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", self.conf])
        self._spawn("slurmd", ["slurmd", "-D", "-f", self.conf, "-N", "ovsegnode"])

        def idle():
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env, timeout=30)
            return r.returncode == 0 and r.stdout.strip() in ("idle", "mixed", "allocated")

        self._wait_for(idle, "the node", 60)
        log(f"cluster up: {host}, ports {ctld_port}/{d_port}, {cpus} CPUs, in {b}")

    def _spawn(self, name, cmd):
        out = open(os.path.join(self.base, "log", name + ".out"), "w")
        try:
            self.procs[name] = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            out.close()

    def _wait_for(self, ready, what, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise Skip(
                        f"{name} exited with {p.returncode} at start-up:\n"
                        + tail(os.path.join(self.base, "log", name + ".out"))
                    )
            if ready():
                return
            time.sleep(0.2)
        logs = "".join(f"--- {n}:\n" + tail(os.path.join(self.base, "log", n + ".out")) for n in self.procs)
        raise Skip(f"{what} did not come up within {seconds} s:\n{logs}")

    def run(self, *cmd, check_rc=True, timeout=60):
        r = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout)
        if check_rc and r.returncode != 0:
            raise Failure(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def sbatch(self, *args, env=None):
        r = subprocess.run(
            ["sbatch", "--parsable", *args],
            capture_output=True,
            text=True,
            env=dict(self.env, **(env or {})),
            timeout=60,
        )
        if r.returncode != 0:
            raise Failure(f"sbatch {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout.strip().split(";")[0]

    def job_states(self, job):
        """{task id or job id: (state, exit code)} for a job or every task of an array."""
        r = subprocess.run(
            ["scontrol", "-o", "show", "job", job], capture_output=True, text=True, env=self.env, timeout=30
        )
        states = {}
        for line in r.stdout.splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            key = f.get("ArrayTaskId", f.get("JobId"))
            states[key] = (f.get("JobState"), f.get("ExitCode"), f.get("Restarts"), f.get("Reason"))
        return states

    def wait_done(self, job, seconds, what, release=False):
        """Waits until no task of `job` is pending or running; returns the final states. With
        `release`, a requeued task may start at once (Slurm otherwise holds it back ~2 minutes)."""
        deadline = time.monotonic() + seconds
        while True:
            states = self.job_states(job)
            for task, st in states.items():
                if release and st[0] == "PENDING" and st[3] == "BeginTime":
                    name = f"{job}_{task}" if task != job else job
                    subprocess.run(
                        ["scontrol", "update", f"JobId={name}", "StartTime=now"],
                        capture_output=True,
                        env=self.env,
                        timeout=30,
                    )
            if states and not any(
                s[0]
                in (
                    "PENDING",
                    "RUNNING",
                    "CONFIGURING",
                    "COMPLETING",
                    "REQUEUED",
                    "REQUEUE_HOLD",
                    "REQUEUE_FED",
                    "RESIZING",
                    "SUSPENDED",
                )
                for s in states.values()
            ):
                return states
            if time.monotonic() > deadline:
                raise Failure(f"{what} (job {job}) not done after {seconds} s: {states}")
            time.sleep(0.2)

    def stop(self):
        """Cancels what is left, stops the daemons by PID and checks that nothing of ours runs."""
        problems = []
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user=root"], capture_output=True, env=self.env, timeout=30)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                r = subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=self.env, timeout=30)
                if r.returncode != 0 or not r.stdout.strip():
                    break
                time.sleep(0.3)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                problems.append(f"{name} (pid {p.pid}) ignored SIGTERM; killed")
                p.kill()
                p.wait(timeout=20)
        # Whatever still runs from this cluster (a job step, a stray daemon) carries its SLURM_CONF
        # or temporary directory in its environment or command line.
        me = os.getpid()
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == me:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    environ = f.read()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if self.base.encode() in environ or self.base.encode() in cmdline:
                command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
                problems.append(f"process {pid} ({command}) still runs; killed")
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        return problems


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------
def make_dataset(root):
    """A small A-150 layout: 7 crops of the fixture image with random labels and one corrupt JPEG
    (8 pairs: shards of 3, 3 and 2)."""
    import numpy as np
    from PIL import Image

    image_dir = os.path.join(root, "ADEChallengeData2016", "images", "validation")
    label_dir = os.path.join(root, "ADEChallengeData2016", "annotations_detectron2", "validation")
    os.makedirs(image_dir)
    os.makedirs(label_dir)
    rng = np.random.default_rng(15)
    src = Image.open(FIXTURE_IMAGE).convert("RGB")
    w0, h0 = src.size
    for i in range(7):
        x, y = int(rng.integers(0, w0 // 3)), int(rng.integers(0, h0 // 3))
        img = src.crop((x, y, min(w0, x + 200 + 20 * i), min(h0, y + 180)))
        if i % 2:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        stem = f"ADE_val_{i + 1:08d}"
        img.save(os.path.join(image_dir, stem + ".jpg"), quality=90)
        w, h = img.size
        small = rng.choice(rng.choice(140, size=6, replace=False), size=((h + 15) // 16, (w + 15) // 16))
        gt = np.kron(small, np.ones((16, 16), dtype=np.int64))[:h, :w].astype(np.uint8)
        gt[rng.random((h, w)) < 0.08] = 255
        Image.fromarray(gt, mode="L").save(os.path.join(label_dir, stem + ".png"))
    with open(os.path.join(image_dir, "ADE_val_00000050.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(np.zeros((20, 30), np.uint8), mode="L").save(os.path.join(label_dir, "ADE_val_00000050.png"))
    return 8


def make_photo_tree(folder):
    """Images in nested folders (two with the same file name in different folders)."""
    from PIL import Image

    src = Image.open(FIXTURE_IMAGE).convert("RGB")
    rel = ["a/x.jpg", "a/y.png", "b/x.jpg", "b/deep/z.jpg", "top.jpg", "c/w.png"]
    for i, r in enumerate(rel):
        p = os.path.join(folder, r)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        src.crop((10 * i, 0, 10 * i + 160, 140)).save(p)
    return sorted(os.path.splitext(r)[0] + ".png" for r in rel)


def numbers(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        m = json.load(f)
    per_class = [(c["IoU"], c["ACC"], c["gt_pixels"], c["pred_pixels"], c["tp"]) for c in m["per_class"]]
    return (
        {k: m[k] for k in HEADLINE_KEYS},
        per_class,
        m["counts"]["images_evaluated"],
        m["counts"]["pixels_evaluated"],
    )


def confusion(out_dir):
    with open(os.path.join(out_dir, "checkpoint.json")) as f:
        c = json.load(f)
    return sorted(map(tuple, c["confusion"]["entries"])), sorted(c["finished"])


def checkpoint_progress(path):
    try:
        with open(path) as f:
            s = json.load(f)
        return len(s["finished"]) + len(s["failed"]), s["pairs_total"]
    except (OSError, ValueError, KeyError):
        return 0, None


# ----------------------------------------------------------------------------------------------
# The test
# ----------------------------------------------------------------------------------------------
def run_tests(cluster, tmp):
    env = dict(
        cluster.env,
        OVSEG=BIN,
        OVSEG_PRESETS=PRESETS,
        OVSEG_CACHE_DIR=os.path.join(tmp, "cache"),
        OMP_WAIT_POLICY="PASSIVE",
    )
    root = os.path.join(tmp, "datasets")
    pairs = make_dataset(root)
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    eval_script = os.path.join(SLURM_TOOLS, "ovseg-eval.sbatch")
    merge_script = os.path.join(SLURM_TOOLS, "ovseg-eval-merge.sbatch")
    # The #SBATCH lines ask for 8 CPUs and 16 GB: this node has fewer.
    small = ["--cpus-per-task=1", "--mem=200M", f"--chdir={tmp}"]
    eval_args = [BUNDLE, "ade150", root]

    # Reference: one process, same threads as each task (results do not depend on sharding).
    single = os.path.join(tmp, "single")
    t0 = time.monotonic()
    r = subprocess.run(
        [BIN, "eval", "--model", BUNDLE, "--dataset", "ade150", "--root", root, "--output", single, "--threads", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    single_s = time.monotonic() - t0
    check(r.returncode == 1, f"single run: exit {r.returncode} (expected 1: one corrupt image)\n{r.stderr}")
    check(numbers(single)[2] == pairs - 1, "single run: wrong number of evaluated images")

    # 1. Array + dependent merge, as in the README.
    out1 = os.path.join(tmp, "eval-array")
    t0 = time.monotonic()
    jid = cluster.sbatch(
        f"--array=0-{TASKS - 1}", *small, f"--output={logs}/eval-%A_%a.log", eval_script, *eval_args, out1, env=env
    )
    mid = cluster.sbatch(
        f"--dependency=afterok:{jid}",
        "--kill-on-invalid-dep=yes",
        "--mem=100M",
        f"--chdir={tmp}",
        f"--output={logs}/merge-%j.log",
        merge_script,
        out1,
        env=env,
    )
    states = cluster.wait_done(jid, 600, "eval array")
    array_s = time.monotonic() - t0
    check(
        len(states) == TASKS and all(s[0] == "COMPLETED" for s in states.values()),
        f"eval array tasks: {states}\n"
        + "".join(tail(os.path.join(logs, f"eval-{jid}_{i}.log")) for i in range(TASKS)),
    )
    mstate = cluster.wait_done(mid, 300, "merge job")
    merge_after_s = time.monotonic() - t0 - array_s
    check(
        list(mstate.values())[0][0] == "FAILED" and list(mstate.values())[0][1] == "1:0",
        f"merge job: {mstate} (expected exit 1: the corrupt image is reported)\n"
        + tail(os.path.join(logs, f"merge-{mid}.log")),
    )
    merged1 = os.path.join(out1, "merged")
    check(numbers(merged1) == numbers(single), "array + merge: metrics differ from the single run")
    check(confusion(merged1) == confusion(single), "array + merge: confusion matrix differs from the single run")
    shard_of = {}
    for i in range(TASKS):
        with open(os.path.join(out1, f"task-{i}", "checkpoint.json")) as f:
            c = json.load(f)
        shard_of[i] = (c["shard"]["index"], c["shard"]["count"])
    check(shard_of == {i: (i, TASKS) for i in range(TASKS)}, f"--shard auto gave {shard_of}")
    t0 = time.monotonic()
    r = subprocess.run(
        [
            BIN,
            "eval-merge",
            "--output",
            os.path.join(tmp, "merge-timing"),
            *[os.path.join(out1, f"task-{i}") for i in range(TASKS)],
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    merge_cmd_s = time.monotonic() - t0
    check(r.returncode == 1, f"eval-merge: exit {r.returncode}\n{r.stderr}")
    log(
        f"eval of {pairs} pairs: one process {single_s:.1f} s; {TASKS}-task array (1 CPU each, {os.cpu_count()} "
        f"CPUs) {array_s:.1f} s from sbatch to the last task's end; dependent merge job done {merge_after_s:.1f} s "
        f"later (eval-merge itself {merge_cmd_s * 1000:.0f} ms); merged metrics == single run"
    )

    # 2. Task 1 is cancelled part-way through (scancel on its index) and requeued by hand; task 0
    # gets the time-limit warning of --signal=B:USR1@300 part-way through and requeues itself.
    # Both resume from their checkpoints, and the merged metrics are again identical.
    out2 = os.path.join(tmp, "eval-requeue")
    jid = cluster.sbatch(
        f"--array=0-{TASKS - 1}",
        *small,
        f"--output={logs}/eval-%A_%a.log",
        eval_script,
        *eval_args,
        out2,
        "--checkpoint-every",
        "1",
        env=env,
    )
    how = {1: "scancel", 0: "time limit", 2: "preemption"}
    stopped_at = {}
    deadline = time.monotonic() + 600
    while len(stopped_at) < len(how):
        check(time.monotonic() < deadline, f"tasks never checkpointed: {cluster.job_states(jid)}")
        states = cluster.job_states(jid)
        for task, kind in how.items():
            if task in stopped_at:
                continue
            # (a task that has not started is still part of the array's pending record)
            st = states.get(str(task), ("PENDING",))[0]
            check(st in ("PENDING", "RUNNING", "CONFIGURING"), f"task {task} ended ({st}) before it was stopped")
            done, total = checkpoint_progress(os.path.join(out2, f"task-{task}", "checkpoint.json"))
            if done >= 1:
                if kind == "scancel":
                    cluster.run("scancel", f"{jid}_{task}")
                elif kind == "time limit":  # what --signal=B:USR1@300 sends 5 minutes before the limit
                    cluster.run("scancel", "--batch", "--signal=USR1", f"{jid}_{task}")
                else:  # what Slurm does to a preempted task (PreemptMode=REQUEUE) or after a node failure
                    cluster.run("scontrol", "requeue", f"{jid}_{task}")
                stopped_at[task] = None
        time.sleep(0.05)
    # Task 1: cancelled, then requeued by hand. Tasks 0 and 2: back to pending by themselves.
    states = cluster.wait_done(f"{jid}_1", 120, "cancelled task")
    check(states["1"][0] == "CANCELLED", f"cancelled task: {states}")
    cluster.run("scontrol", "requeue", f"{jid}_1")
    deadline = time.monotonic() + 120
    for task in (0, 2):
        while cluster.job_states(f"{jid}_{task}").get(str(task), ("?", "", "0", ""))[2] != "1":
            check(
                time.monotonic() < deadline,
                f"task {task} was not requeued: {cluster.job_states(jid)}\n"
                + tail(os.path.join(logs, f"eval-{jid}_{task}.log")),
            )
            time.sleep(0.2)
    for task in how:
        stopped_at[task], total = checkpoint_progress(os.path.join(out2, f"task-{task}", "checkpoint.json"))
        log(
            f"task {task} ({how[task]}) stopped after {stopped_at[task]} of {total} images"
            + ("" if stopped_at[task] < total else " (it had just finished: the requeue checks a finished resume)")
        )
    states = cluster.wait_done(jid, 600, "requeued array", release=True)
    check(all(st[0] == "COMPLETED" for st in states.values()), f"after the requeues: {states}")
    for task, kind in how.items():
        with open(os.path.join(logs, f"eval-{jid}_{task}.log")) as f:
            text = f.read()
        check("restart 1" in text, f"task {task} did not run again:\n{text}")
        if stopped_at[task] > 0:
            check(
                f"resuming: {stopped_at[task]} images done" in text,
                f"task {task} did not resume from its checkpoint:\n{text}",
            )
        if kind == "time limit":
            check("time limit near: requeueing" in text, f"task {task} did not requeue itself:\n{text}")
        check(
            confusion(os.path.join(out2, f"task-{task}")) == confusion(os.path.join(out1, f"task-{task}")),
            f"requeued shard {task} differs from the same shard run without interruption",
        )
    # A cancelled task no longer satisfies afterok on the whole array: the merge goes after the tasks.
    mid = cluster.sbatch(
        "--dependency=afterok:" + ":".join(f"{jid}_{i}" for i in range(TASKS)),
        "--mem=100M",
        f"--chdir={tmp}",
        f"--output={logs}/merge-%j.log",
        merge_script,
        out2,
        env=env,
    )
    mstate = cluster.wait_done(mid, 300, "merge after requeue")
    check(
        list(mstate.values())[0][1] == "1:0",
        f"merge after requeue: {mstate}\n" + tail(os.path.join(logs, f"merge-{mid}.log")),
    )
    merged2 = os.path.join(out2, "merged")
    check(numbers(merged2) == numbers(single), "cancel + requeue: metrics differ from the single run")
    check(confusion(merged2) == confusion(single), "cancel + requeue: confusion matrix differs")
    log("cancelled, self-requeued and preempted tasks resumed; merged metrics == single run")

    # 3. segment --shard auto as an array (--array=1-3: SLURM_ARRAY_TASK_MIN = 1).
    photos = os.path.join(tmp, "photos")
    expected = make_photo_tree(photos)
    seg_out = os.path.join(tmp, "segmented")
    jid = cluster.sbatch(
        "--array=1-3",
        *small,
        f"--output={logs}/segment-%A_%a.log",
        os.path.join(SLURM_TOOLS, "ovseg-segment.sbatch"),
        BUNDLE,
        photos,
        seg_out,
        "-f",
        os.path.join(SHARED, "fixtures", "tiny_swin_vit", "classes.txt"),
        env=env,
    )
    states = cluster.wait_done(jid, 600, "segment array")
    check(all(s[0] == "COMPLETED" for s in states.values()) and len(states) == 3, f"segment array: {states}")
    written = sorted(os.path.relpath(os.path.join(d, f), seg_out) for d, _, fs in os.walk(seg_out) for f in fs)
    check(written == expected, f"segment outputs {written}, expected {expected}")
    per_task = []
    for t in (1, 2, 3):
        with open(os.path.join(logs, f"segment-{jid}_{t}.log")) as f:
            text = f.read()
        line = [ln for ln in text.splitlines() if ln.startswith("segment: ")]
        check(line, f"task {t}: no summary line\n{text}")
        per_task.append(int(line[-1].split()[1]))
    check(
        sum(per_task) == len(expected) and all(n > 0 for n in per_task),
        f"images per task {per_task}: each of the {len(expected)} images must be segmented exactly once",
    )
    log(f"segment array: {len(expected)} images, {per_task} per task, every output exactly once")


def main():
    missing = [p for p in (*DAEMONS, *CLIENTS) if shutil.which(p) is None]
    if missing:
        print(f"SKIPPED: Slurm/munge programs not found: {', '.join(missing)} (Debian: slurm-wlm munge)")
        return SKIP
    if os.geteuid() != 0:
        print("SKIPPED: the test cluster's slurmd must run as root")
        return SKIP
    for what, path in (
        ("the built ovseg (OVSEG_BIN)", BIN),
        ("the tiny bundle", os.path.join(BUNDLE, "manifest.json")),
        ("../shared fixture", FIXTURE_IMAGE),
        ("../shared class lists", PRESETS),
    ):
        if not path or not os.path.isfile(path):
            print(f"SKIPPED: missing {what}: {path or '(unset)'}")
            return SKIP

    def terminated(signum, frame):
        raise Failure(f"the test got signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    tmp = tempfile.mkdtemp(prefix="ovseg-slurm-")
    cluster = Cluster(tmp)
    rc = 0
    t0 = time.monotonic()
    try:
        try:
            cluster.start()
        except Skip as e:
            print(f"SKIPPED: the Slurm daemons cannot start here: {e}")
            rc = SKIP
        else:
            run_tests(cluster, tmp)
    except (Failure, subprocess.TimeoutExpired) as e:
        print(f"FAILED: {e}")
        for name in ("slurmctld", "slurmd"):
            print(f"--- {name} log tail:\n" + tail(os.path.join(tmp, "log", name + ".log")))
        rc = 1
    finally:
        leftovers = cluster.stop()
        for p in leftovers:
            print(f"FAILED: {p}")
        if leftovers:
            rc = 1
        if rc != 1:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"(kept {tmp} for inspection)")
    if rc == 0:
        log(f"passed in {time.monotonic() - t0:.1f} s; every daemon stopped, nothing left running")
    return rc


if __name__ == "__main__":
    sys.exit(main())
