"""download_cube against a local HTTP server on 127.0.0.1 that serves simulated
cubes and misbehaves on request. Tests never reach the internet."""

import http.server
import threading
from pathlib import Path

import pytest
from fixtures import make_galaxy, write_cube

from linecube.data.download import DownloadError, cube_url, download_cube, verify_logcube
from linecube.io.logcube import CubeError


class FaultyHandler(http.server.BaseHTTPRequestHandler):
    """Serves files under ``root``; ``faults[path]`` is a list of behaviours
    consumed one request at a time: ok, 500, 429, 404, drop, truncate."""

    root: Path
    faults: dict
    hits: dict

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        plan = self.faults.get(self.path, [])
        what = plan.pop(0) if plan else "ok"
        f = self.root / self.path.lstrip("/")
        if what in ("500", "429", "404", "503"):
            self.send_response(int(what))
            if what == "429":
                self.send_header("Retry-After", "0")
            self.end_headers()
            return
        if not f.exists():
            self.send_response(404)
            self.end_headers()
            return
        data = f.read_bytes()
        if what == "drop":
            self.connection.close()  # no response at all
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if what == "truncate":
            self.wfile.write(data[: len(data) // 3])
            self.wfile.flush()
            self.connection.close()
            return
        if what == "corrupt":
            data = data[:1000] + bytes(b ^ 0xFF for b in data[1000:2000]) + data[2000:]
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server(tmp_path_factory, lines):
    root = tmp_path_factory.mktemp("sas")
    g = make_galaxy(ifusize=19, plate=8485, ifudsgn=1901, z=0.03)
    write_cube(root, g, lines)
    handler = type("H", (FaultyHandler,), {"root": root, "faults": {}, "hits": {}})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler, root
    srv.shutdown()


PATH = "/v3_1_1/8485/stack/manga-8485-1901-LOGCUBE.fits.gz"


def fetch(base, dest, **kw):
    waits = []
    out = download_cube(cube_url(base, "v3_1_1", 8485, 1901), dest, sleep=waits.append, timeout_s=5, **kw)
    return out, waits


def test_url_layout():
    assert cube_url("https://data.sdss.org/sas/dr17/manga/spectro/redux/", "v3_1_1", 8485, 1901) == (
        "https://data.sdss.org/sas/dr17/manga/spectro/redux/v3_1_1/8485/stack/manga-8485-1901-LOGCUBE.fits.gz"
    )


def test_clean_download_is_verified_and_identical(server, tmp_path):
    base, h, root = server
    out, waits = fetch(base, tmp_path / "c.fits.gz")
    assert out.read_bytes() == (root / PATH.lstrip("/")).read_bytes() and waits == []


@pytest.mark.parametrize(
    "faults", [["500", "ok"], ["429", "500", "ok"], ["drop", "ok"], ["truncate", "ok"], ["corrupt", "truncate", "ok"]]
)
def test_transient_faults_are_retried_with_backoff(server, tmp_path, faults):
    base, h, root = server
    h.faults[PATH] = list(faults)
    h.hits.clear()
    out, waits = fetch(base, tmp_path / "c.fits.gz", retries=4, backoff_s=0.5)
    assert out.read_bytes() == (root / PATH.lstrip("/")).read_bytes()
    assert h.hits[PATH] == len(faults)
    assert waits == [0.5 * 2**i for i in range(len(faults) - 1)]  # exponential backoff
    assert not list(tmp_path.glob(".*part"))


def test_gives_up_and_leaves_nothing(server, tmp_path):
    base, h, _ = server
    h.faults[PATH] = ["truncate"] * 3
    dest = tmp_path / "c.fits.gz"
    with pytest.raises(DownloadError, match=r"failed after 3 attempts; last error: .*ended after"):
        fetch(base, dest, retries=2, backoff_s=0.1)
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_not_found_is_final(server, tmp_path):
    base, h, _ = server
    h.hits.clear()
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_cube(cube_url(base, "v3_1_1", 8485, 9999), tmp_path / "x.fits.gz", sleep=lambda s: None, timeout_s=5)
    assert sum(h.hits.values()) == 1


def test_verify_rejects_truncated_and_corrupt(server, tmp_path):
    _, _, root = server
    data = (root / PATH.lstrip("/")).read_bytes()
    p = tmp_path / "t.fits.gz"
    p.write_bytes(data[:-100])
    with pytest.raises(CubeError, match="truncated"):
        verify_logcube(p)
    p.write_bytes(data[:-8] + b"\0" * 8)  # CRC and length trailer wrong
    with pytest.raises(CubeError, match="corrupt gzip|CRC|length"):
        verify_logcube(p)
