"""Ctrl-C (SIGINT, as a notebook's interrupt sends) stops a long call with
KeyboardInterrupt; an interrupted index keeps what it committed."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import plip_retrieval as pr
from conftest import IMAGES, MODEL


# A shell that starts a job in the background (as a CI runner may) makes it
# ignore SIGINT, and Python then keeps it ignored; a notebook kernel or a
# terminal session has Python's handler, which raises KeyboardInterrupt.
PRELUDE = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"


def start(script, env=None):
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_during_index_commits_what_is_done(tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    for i in range(40):
        shutil.copy(IMAGES / "png_rgb_224x224.png", slides / f"img{i:03}.png")
    # The failpoint holds the run just after its first commit until it is
    # cancelled, so the signal arrives at a known point.
    p = start(
        f"""
        import plip_retrieval as pr
        try:
            pr.index({str(slides)!r}, index={str(tmp_path / '.plip')!r}, model={str(MODEL)!r},
                     batch_size=4, commit_every=8)
            print("finished")
        except KeyboardInterrupt:
            print("interrupted")
        """,
        env={"PLIP_FAILPOINT": "after-commit:1"},
    )
    line = p.stderr.readline()
    assert "failpoint after-commit:1 reached" in line, line + p.stderr.read()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert out.strip() == "interrupted", err
    assert "committed to" in err
    n = len(pr.Index(tmp_path / ".plip"))
    assert 8 <= n < 40
    s = pr.index(slides, index=tmp_path / ".plip")
    assert s["unchanged"] == n and s["added"] == 40 - n


def test_ctrl_c_stops_embed_images():
    big = str(IMAGES / "jpeg_rgb_1000x300_wide_444.jpg")
    p = start(
        f"""
        import sys, time
        import plip_retrieval as pr
        m = pr.Model({str(MODEL)!r})
        print("ready", flush=True)
        t = time.monotonic()
        try:
            m.embed_images([{big!r}] * 20000)
            print("finished")
        except KeyboardInterrupt:
            print("interrupted %.2f" % (time.monotonic() - t))
        """
    )
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert out.startswith("interrupted"), out + err
    # Stopped within a few batches, not after 20,000 images.
    assert time.monotonic() - sent < 15
