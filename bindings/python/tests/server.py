"""A real tejido-server process on 127.0.0.1 for the end-to-end tests, and its admin CLI."""

import json
import os
import pathlib
import subprocess
import urllib.request

SERVER_BIN = os.environ.get("TEJIDO_SERVER_BIN", "")
FORMS_DIR = pathlib.Path(
    os.environ.get("TEJIDO_FORMS_DIR", pathlib.Path(__file__).resolve().parents[3] / "examples" / "forms")
)
ACTIVITY_LOG = FORMS_DIR / "bitacora_red_juvenil.xlsx"
ADMIN_TOKEN = "coordinators-admin-token-for-tests"


class Server:
    """`tejido-server serve` on a data folder; stop() and start() again keep the same port."""

    def __init__(self, data_dir):
        self.data = str(data_dir)
        self.proc = None
        self.address = "127.0.0.1:0"

    @property
    def url(self):
        return f"http://{self.address}"

    def start(self):
        self.proc = subprocess.Popen(
            [SERVER_BIN, "--data", self.data, "serve", "--listen", self.address, "--admin-token", ADMIN_TOKEN],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for line in self.proc.stdout:
            if line.startswith("listening on http://"):
                self.address = line.strip().removeprefix("listening on http://")
                return self
        raise RuntimeError(f"tejido-server exited with {self.proc.wait()} before listening")

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def admin(self, *args):
        """Runs an admin command with --json and returns its JSON answer."""
        out = subprocess.run(
            [SERVER_BIN, "--data", self.data, "--json", *args], check=True, capture_output=True, text=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    def review(self, submission_id, state, comment):
        """A coordinator's review through the server's HTTP API."""
        request = urllib.request.Request(
            f"{self.url}/v1/submissions/{submission_id}/review",
            data=json.dumps({"state": state, "comment": comment}).encode(),
            headers={
                "authorization": f"Bearer {ADMIN_TOKEN}",
                "content-type": "application/json",
                "tejido-protocol": "1",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
