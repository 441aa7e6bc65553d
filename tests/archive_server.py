"""A fake ESO archive on 127.0.0.1 for the retrieve-data tests (stdlib ``http.server``).

It speaks the parts of the archive protocol that astroquery 0.4.11 and pyvo really use,
so the tests exercise their HTTP code with no monkeypatching:

- ``POST /tap_obs/sync`` — TAP synchronous queries (``REQUEST=doQuery``, ``LANG=ADQL``,
  ``QUERY``, ``MAXREC``), answered from SQLite tables ``dbo.raw`` (the simulated files)
  and ``TAP_SCHEMA.columns``, returned as a VOTable with ``INFO name=QUERY_STATUS``.
  Only ``SELECT [TOP n] cols FROM table [WHERE ...] [ORDER BY ...]`` is understood; the
  WHERE clause (``=``, ``in``, ``like``, ``>=``, ``<``, ``and`` ...) is run by SQLite.
- ``POST /calselector/v1/associations`` — the calibration selector, form fields
  ``dp_id`` (repeated) and ``mode=Raw2Raw``: one XML association tree
  (``application/xml``) for one file, a ``multipart/form-data`` message of trees for
  several, each named by ``Content-Disposition`` as the real service does.
- ``GET /dataPortal/file/<dp_id>`` — the data portal: FITS files made on the fly with
  astropy (header plus a tiny image, with CHECKSUM/DATASUM), delivered as ``.fits``,
  tile-compressed ``.fits.fz`` or Unix-compressed ``.fits.Z``; night logs
  ``<dp_id>.NL`` delivered as ``<dp_id>.NL.txt``. Proprietary files need a bearer token,
  else the archive's HTML login page is returned with status 200, as the real portal does.
- ``GET /sso/oidc/token`` — the OIDC password grant: a JWT-like ``id_token``.

Fault injection per file id (``FakeArchive.faults``): ``"truncate"`` (announces the full
Content-Length, sends half and closes), ``"truncate-nolength"`` (no Content-Length, half
the body), ``"login"`` (HTML login page), ``"error500"``. ``tap_error`` and
``calselector_error`` make those services answer 500.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import io
import json
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from astropy.io import fits
from astropy.io.votable import from_table
from astropy.io.votable.tree import Info
from astropy.table import Table

# Columns of the simulated dbo.raw table: (name, datatype, unit, description), a subset
# of the archive's real raw-data table.
RAW_COLUMNS = [
    ("dp_id", "char", "", "Data product identifier (archive file name without extension)"),
    ("instrument", "char", "", "Instrument name"),
    ("dp_cat", "char", "", "Data category: SCIENCE, CALIB, ACQUISITION, TECHNICAL"),
    ("dp_type", "char", "", "Data type: OBJECT, SKY, BIAS, FLAT,LAMP, WAVE ..."),
    ("dp_tech", "char", "", "Observation technique"),
    ("object", "char", "", "OBJECT header keyword"),
    ("target", "char", "", "Target name (OBS TARG NAME)"),
    ("prog_id", "char", "", "Programme identifier"),
    ("ins_mode", "char", "", "Instrument mode"),
    ("tpl_start", "char", "", "Template start time"),
    ("date_obs", "char", "", "Observation date (DATE-OBS)"),
    ("exp_start", "char", "", "Exposure start (UT)"),
    ("exposure", "double", "s", "Exposure time"),
    ("access_estsize", "long", "kbyte", "Estimated size of the delivered file"),
]

LOGIN_PAGE = b"""<!DOCTYPE html>
<html><head><title>ESO User Portal - Login</title></head>
<body><form action="/sso/login" method="post">
<input name="username"/><input name="password" type="password"/></form>
<p>You need to log in to access this file.</p></body></html>
"""


@dataclass
class SimFile:
    """One simulated archive file: a science exposure, a calibration or a night log."""

    dp_id: str
    dp_cat: str = "CALIB"
    dp_type: str = "BIAS"
    object: str = "BIAS"
    target: str = ""
    prog_id: str = "099.A-0001(A)"
    ins_mode: str = "WFM-NOAO-N"
    tpl_start: str = ""
    exposure: float = 0.0
    delivery: str = "fz"  # fits | fz | Z | nightlog
    proprietary: bool = False
    calibs: list[str] = field(default_factory=list)  # calselector associations (science)

    @property
    def date_obs(self) -> str:
        return self.dp_id.split(".", 1)[1] if self.delivery != "nightlog" else ""

    @property
    def filename(self) -> str:
        suffix = {"fits": ".fits", "fz": ".fits.fz", "Z": ".fits.Z", "nightlog": ".txt"}[self.delivery]
        return self.dp_id + suffix


def make_fits(item: SimFile) -> bytes:
    """A tiny MUSE-like raw file for ``item``: primary header and one CHAN01 image."""
    date_obs = dt.datetime.fromisoformat(item.date_obs)
    mjd = (date_obs - dt.datetime(1858, 11, 17)).total_seconds() / 86400
    primary = fits.PrimaryHDU()
    hdr = primary.header
    hdr["TELESCOP"] = "ESO-VLT-U4"
    hdr["INSTRUME"] = "MUSE"
    hdr["OBJECT"] = item.object
    hdr["DATE-OBS"] = item.date_obs
    hdr["MJD-OBS"] = round(mjd, 8)
    hdr["EXPTIME"] = item.exposure
    hdr["ARCFILE"] = item.dp_id + ".fits"
    hdr["ORIGFILE"] = f"MUSE_{item.dp_type.replace(',', '_')}.fits"
    hdr["HIERARCH ESO DPR CATG"] = item.dp_cat
    hdr["HIERARCH ESO DPR TYPE"] = item.dp_type
    hdr["HIERARCH ESO DPR TECH"] = "IFU"
    hdr["HIERARCH ESO TPL START"] = item.tpl_start or item.date_obs[:19]
    hdr["HIERARCH ESO INS MODE"] = item.ins_mode
    hdr["HIERARCH ESO OBS PROG ID"] = item.prog_id
    if item.target:
        hdr["HIERARCH ESO OBS TARG NAME"] = item.target
    seed = sum(item.dp_id.encode())
    data = (np.arange(64, dtype=np.uint16).reshape(8, 8) + seed % 1000).astype(np.uint16)
    if item.delivery == "fz":
        ext = fits.CompImageHDU(data, name="CHAN01", compression_type="RICE_1")
    else:
        ext = fits.ImageHDU(data, name="CHAN01")
    buf = io.BytesIO()
    fits.HDUList([primary, ext]).writeto(buf, checksum=True)
    return buf.getvalue()


def make_nightlog(item: SimFile) -> bytes:
    """An ESO night report with its weather block (the layout musered.nightlog reads)."""
    date = dt.datetime.fromisoformat(item.dp_id.split(".", 1)[1].removesuffix(".NL"))
    night = (date - dt.timedelta(hours=12)).date().isoformat()
    text = (
        "------------------------------------------------------------\n"
        "        Night Log for UT4 - MUSE\n"
        "------------------------------------------------------------\n"
        f"Date: {night}\n"
        "Observer(s): simulated\n\n"
        "Weather observations\n"
        "Time\tConditions\tComment\n"
        "23:05\tPhotometric\tSeeing 0.6\n"
        "02:30\tClear\tThin cirrus to the West\n\n"
        "Operations summary\nNothing to report.\n"
    )
    return text.encode()


def lzw_compress(data: bytes, maxbits: int = 16) -> bytes:
    """Unix ``compress`` (.Z) encoding, block mode, as ``gunzip``/``uncompress`` read it.

    Codes start 9 bits wide and grow when the dictionary outgrows them; at each width
    change the current group of 8 codes is padded to ``n_bits`` bytes, the quirk of
    compress(1) that decoders expect. No CLEAR code is emitted (inputs here are small).
    """
    out = bytearray(b"\x1f\x9d" + bytes([0x80 | maxbits]))
    table = {bytes([i]): i for i in range(256)}
    free_ent, n_bits = 257, 9
    maxcode = (1 << n_bits) - 1
    maxmaxcode = 1 << maxbits
    bits = 0  # bit accumulator, LSB first
    nbits_acc = 0
    codes_in_group = 0

    def emit(code: int) -> None:
        nonlocal bits, nbits_acc, codes_in_group
        bits |= code << nbits_acc
        nbits_acc += n_bits
        codes_in_group = (codes_in_group + 1) % 8
        while nbits_acc >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits_acc -= 8

    def grow_if_needed() -> None:
        nonlocal n_bits, maxcode, codes_in_group, bits, nbits_acc
        if free_ent > maxcode and n_bits < maxbits:
            # pad the partial group of 8 codes to n_bits bytes
            while codes_in_group:
                emit(0)
            n_bits += 1
            maxcode = maxmaxcode if n_bits == maxbits else (1 << n_bits) - 1

    if not data:
        return bytes(out)
    prefix = data[:1]
    for byte in data[1:]:
        candidate = prefix + bytes([byte])
        if candidate in table:
            prefix = candidate
            continue
        emit(table[prefix])
        grow_if_needed()
        if free_ent < maxmaxcode:
            table[candidate] = free_ent
            free_ent += 1
        prefix = bytes([byte])
    emit(table[prefix])
    if nbits_acc:
        out.append(bits & 0xFF)
    return bytes(out)


def make_token(username: str, lifetime_s: int = 3600) -> str:
    """A JWT-shaped token whose payload holds ``exp`` (astroquery reads only that)."""
    def part(obj: dict) -> str:
        return base64.b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return ".".join([part({"alg": "none", "typ": "JWT"}),
                     part({"exp": int(time.time()) + lifetime_s, "sub": username}),
                     "signature"])


class FakeArchive:
    """The simulated archive and its HTTP server; use as a context manager."""

    def __init__(self, files: list[SimFile], users: dict[str, str] | None = None):
        self.files = {f.dp_id: f for f in files}
        self.users = dict(users or {})
        self.tokens: set[str] = set()
        self.faults: dict[str, str] = {}
        self.tap_error = False
        self.calselector_error = False
        self.downloads: list[str] = []  # file ids served successfully
        self.requests: list[tuple[str, str]] = []
        self.queries: list[str] = []
        self.calselector_requests: list[list[str]] = []
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._cache: dict[str, bytes] = {}
        self._fill_db()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- URLs ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def settings_block(self) -> dict:
        """The ``retrieve_data`` settings block pointing musered at this server."""
        return {
            "tap_url": f"{self.base_url}/tap_obs",
            "calselector_url": f"{self.base_url}/calselector/v1/associations",
            "download_url": f"{self.base_url}/dataPortal/file/",
            "auth_url": f"{self.base_url}/sso/oidc/token",
        }

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeArchive:
        archive = self

        class Handler(_Handler):
            fake = archive

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakeArchive:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- content ---------------------------------------------------------------------------
    def _fill_db(self) -> None:
        cur = self._db.cursor()
        cols = ", ".join(f"{name} {'REAL' if t == 'double' else 'INTEGER' if t == 'long' else 'TEXT'}"
                         for name, t, _, _ in RAW_COLUMNS)
        cur.execute(f"CREATE TABLE dbo_raw ({cols})")
        cur.execute("CREATE TABLE tap_schema_columns (table_name TEXT, column_name TEXT, "
                    "datatype TEXT, unit TEXT, description TEXT)")
        for name, dtype, unit, desc in RAW_COLUMNS:
            cur.execute("INSERT INTO tap_schema_columns VALUES (?, ?, ?, ?, ?)",
                        ("dbo.raw", name, dtype, unit, desc))
        for item in self.files.values():
            if item.delivery == "nightlog":
                continue  # night logs are not in the raw-data table
            size_kb = max(1, len(self.content(item)) // 1024)
            cur.execute(
                f"INSERT INTO dbo_raw VALUES ({', '.join('?' * len(RAW_COLUMNS))})",
                (item.dp_id, "MUSE", item.dp_cat, item.dp_type, "IFU", item.object, item.target,
                 item.prog_id, item.ins_mode, item.tpl_start or item.date_obs[:19], item.date_obs,
                 item.date_obs, item.exposure, size_kb),
            )
        self._db.commit()

    def content(self, item: SimFile) -> bytes:
        """The bytes delivered for ``item`` (cached: the same file every time)."""
        if item.dp_id not in self._cache:
            if item.delivery == "nightlog":
                data = make_nightlog(item)
            else:
                data = make_fits(item)
                if item.delivery == "Z":
                    data = lzw_compress(data)
            self._cache[item.dp_id] = data
        return self._cache[item.dp_id]

    def run_adql(self, query: str) -> Table:
        """Run the small ADQL subset this server understands; ValueError if not."""
        match = re.match(
            r"^\s*select\s+(?:top\s+(\d+)\s+)?(.+?)\s+from\s+([\w.]+)"
            r"(?:\s+where\s+(.+?))?(?:\s+order\s+by\s+(.+?))?\s*;?\s*$",
            query, re.IGNORECASE | re.DOTALL)
        if not match:
            raise ValueError(f"cannot parse ADQL query: {query}")
        top, columns, table, where, order = match.groups()
        tables = {"dbo.raw": "dbo_raw", "tap_schema.columns": "tap_schema_columns"}
        if table.lower() not in tables:
            raise ValueError(f"Table {table} does not exist")
        sql = f"SELECT {columns} FROM {tables[table.lower()]}"
        if where:
            sql += f" WHERE {where}"
        if order:
            sql += f" ORDER BY {order}"
        if top:
            sql += f" LIMIT {int(top)}"
        with self._lock:
            try:
                cur = self._db.execute(sql)
            except sqlite3.Error as exc:
                raise ValueError(f"query error: {exc}") from None
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        data = {}
        for i, name in enumerate(names):
            values = [row[i] for row in rows]
            if values and all(isinstance(v, (int, float)) for v in values):
                data[name] = np.array(values)
            else:
                data[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
        return Table(data, names=names) if names else Table()


def votable_bytes(table: Table | None, error: str | None = None) -> bytes:
    """A TAP result document: RESOURCE type="results" with INFO QUERY_STATUS."""
    if table is None:
        table = Table({"error": np.array([], dtype=str)})
    votable = from_table(table)
    resource = votable.resources[0]
    resource.type = "results"
    status = Info(name="QUERY_STATUS", value="ERROR" if error else "OK")
    if error:
        status.content = error
    resource.infos.append(status)
    buf = io.BytesIO()
    votable.to_xml(buf)
    return buf.getvalue()


def association_xml(item: SimFile, known: dict[str, SimFile]) -> bytes:
    """The calselector Raw2Raw association tree of a science file."""
    groups: dict[str, list[str]] = {}
    for calib in item.calibs:
        category = known[calib].dp_type.replace(",", "_") if calib in known else "UNKNOWN"
        if calib.endswith(".NL"):
            category = "NIGHT_LOG"
        groups.setdefault(category, []).append(calib)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<association category="SCI_{item.dp_type}" certified="true" complete="true" '
        'mode="Raw2Raw" type="main">',
        f'  <mainFiles><file category="{item.dp_type}" name="{item.dp_id}"/></mainFiles>',
        "  <messages/>",
        "  <associatedFiles>",
    ]
    for category, names in groups.items():
        parts.append(f'    <association category="{category}" certified="true" complete="true" '
                     'match="calib_plan" type="main"><mainFiles>')
        parts += [f'      <file category="{category}" name="{name}"/>' for name in names]
        parts.append("    </mainFiles><messages/><associatedFiles/></association>")
    parts += ["  </associatedFiles>", "</association>", ""]
    return "\n".join(parts).encode()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeArchive
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    # -- plumbing --------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _form(self) -> dict[str, list[str]]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        form = parse_qs(body, keep_blank_values=True)
        for key, values in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items():
            form.setdefault(key, []).extend(values)
        return form

    def do_GET(self) -> None:
        self.fake.requests.append(("GET", self.path))
        path = urlsplit(self.path).path
        if path.startswith("/dataPortal/file/"):
            self._download(unquote(path[len("/dataPortal/file/"):]))
        elif path == "/sso/oidc/token":
            self._token(self._form())
        elif path in ("/tap_obs/sync", "/tap_obs/sync/"):
            self._tap(self._form())
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        self.fake.requests.append(("POST", self.path))
        path = urlsplit(self.path).path
        if path in ("/tap_obs/sync", "/tap_obs/sync/"):
            self._tap(self._form())
        elif path == "/calselector/v1/associations":
            self._calselector(self._form())
        else:
            self._send(404, b"not found", "text/plain")

    # -- services --------------------------------------------------------------------------
    def _tap(self, form: dict[str, list[str]]) -> None:
        if self.fake.tap_error:
            self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
            return
        query = (form.get("QUERY") or [""])[0]
        self.fake.queries.append(query)
        maxrec = int((form.get("MAXREC") or ["-1"])[0])
        try:
            table = self.fake.run_adql(query)
        except ValueError as exc:
            self._send(200, votable_bytes(None, error=str(exc)), "application/x-votable+xml")
            return
        if maxrec >= 0:
            table = table[:maxrec]
        self._send(200, votable_bytes(table), "application/x-votable+xml")

    def _calselector(self, form: dict[str, list[str]]) -> None:
        if self.fake.calselector_error:
            self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
            return
        ids = form.get("dp_id", [])
        self.fake.calselector_requests.append(list(ids))
        if (form.get("mode") or [""])[0] != "Raw2Raw" or not ids:
            self._send(400, b"bad request: need dp_id and mode=Raw2Raw", "text/plain")
            return
        docs = []
        for dp_id in ids:
            item = self.fake.files.get(dp_id) or SimFile(dp_id=dp_id, dp_type="UNKNOWN")
            docs.append((f"{dp_id}_raw2raw.xml", association_xml(item, self.fake.files)))
        if len(docs) == 1:
            name, xml = docs[0]
            self._send(200, xml, "application/xml;content=calselector",
                       {"Content-Disposition": f'attachment; filename="{name}"'})
            return
        boundary = uuid.uuid4().hex
        chunks = []
        for name, xml in docs:
            chunks.append(
                f"--{boundary}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n"
                f"Content-Type: application/xml;content=calselector\r\n"
                f"Content-Length: {len(xml)}\r\n\r\n".encode() + xml + b"\r\n")
        body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
        self._send(200, body, f"multipart/form-data; boundary={boundary}")

    def _token(self, form: dict[str, list[str]]) -> None:
        username = (form.get("username") or [""])[0]
        password = (form.get("password") or [""])[0]
        if (form.get("grant_type") or [""])[0] != "password" or self.fake.users.get(username) != password \
                or not username:
            self._send(401, json.dumps({"error": "invalid_grant"}).encode(), "application/json")
            return
        token = make_token(username)
        self.fake.tokens.add(token)
        body = json.dumps({"access_token": "opaque", "id_token": token, "token_type": "bearer",
                           "expires_in": 3600, "scope": ""}).encode()
        self._send(200, body, "application/json")

    def _download(self, dp_id: str) -> None:
        item = self.fake.files.get(dp_id)
        fault = self.fake.faults.get(dp_id)
        if fault == "error500":
            self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
            return
        if item is None:
            self._send(404, f"{dp_id} not found".encode(), "text/plain")
            return
        auth = self.headers.get("Authorization", "")
        logged_in = auth.startswith("Bearer ") and auth[7:] in self.fake.tokens
        if fault == "login" or (item.proprietary and not logged_in):
            # the portal answers a file request with its login page, status 200, and a
            # Content-Disposition naming the file, so the page is saved as the file
            self._send(200, LOGIN_PAGE, "text/html",
                       {"Content-Disposition": f'attachment; filename="{item.filename}"'})
            return
        body = self.fake.content(item)
        headers = {"Content-Disposition": f'attachment; filename="{item.filename}"',
                   "Last-Modified": email.utils.formatdate(usegmt=True)}
        ctype = "text/plain" if item.delivery == "nightlog" else "application/octet-stream"
        if fault == "truncate":
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault == "truncate-nolength":
            # HTTP/1.0-style body delimited by the connection close
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Connection", "close")
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.fake.downloads.append(dp_id)
        self._send(200, body, ctype, headers)
