#!/usr/bin/python3
"""e2e-migrate: `tenantwal migrate` and `tenantwal import` against s3rver.

Sources, uploaded to s3://BUCKET/PREFIX/databases/NAME/ with the aws CLI:
  legacy  the real v0.3 replica from ../shared/fixtures/litestream/v03-restore-ok
  early   the real early LTX file from ../shared/fixtures/litestream/ltx-early, on top
          of a snapshot LTX built here whose checksum is the file's pre-apply checksum
  synth   a current-format (v0.5.2, LZ4 blocks) LTX replica built here from a real
          SQLite database: level 0 per transaction, a level-1 compaction, a level-9
          snapshot
  broken  a truncated LTX file
Each migrates (--all with a CSV tenant map, continuing past `broken` and a
missing name), then `tenantwal restore` must equal the expected database
(sqldiff empty, integrity_check ok). Re-running --all skips everything.
--timestamp picks an earlier state. `import` snapshots a plain file.
The fixtures are read in place; without ../shared the test reports SKIPPED.
"""
import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

FIXTURES = os.path.normpath(os.path.join(tw.SOURCE, "..", "shared", "fixtures", "litestream"))

# ---- LTX writer (superfly/ltx v0.5.2 layout; see lib/store/litestream.h) ----------

_TAB = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0xD800000000000000 if _c & 1 else _c >> 1
    _TAB.append(_c)
FLAG = 1 << 63
M64 = (1 << 64) - 1


def crc64(data, crc=0):
    crc ^= M64
    for b in data:
        crc = _TAB[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ M64


def page_sum(pgno, page):
    return FLAG | crc64(struct.pack(">I", pgno) + page)


def db_sum(img, ps):
    x = 0
    for p in range(1, len(img) // ps + 1):
        x ^= page_sum(p, img[(p - 1) * ps:p * ps])
    return x | FLAG


def lz4_literal_block(data):
    """A valid LZ4 block holding `data` as literals only (no compression)."""
    n = len(data)
    out = bytearray([0xF0])
    rest = n - 15
    while rest >= 255:
        out.append(255)
        rest -= 255
    out.append(rest)
    return bytes(out) + data


def uvarint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def make_ltx(before, after, ps, mn, mx, ts):
    commit = len(after) // ps
    pre = 0 if mn == 1 else db_sum(before, ps)
    hdr = b"LTX1" + struct.pack(">IIIQQQQQQIIQ", 0, ps, commit, mn, mx, ts, pre, 0, 0, 0, 0, 0)
    hdr += b"\0" * 20
    f = bytearray(hdr)
    hashed = bytearray(hdr)
    index = bytearray()
    for p in range(1, commit + 1):
        new = after[(p - 1) * ps:p * ps]
        old = before[(p - 1) * ps:p * ps] if mn != 1 else None
        if mn != 1 and old == new:
            continue
        start = len(f)
        block = lz4_literal_block(new)
        head = struct.pack(">IH", p, 1) + struct.pack(">I", len(block))
        f += head + block
        hashed += head + new
        index += uvarint(p) + uvarint(start) + uvarint(len(f) - start)
    f += b"\0" * 6
    hashed += b"\0" * 6
    index += uvarint(0)
    index += struct.pack(">Q", len(index))
    f += index
    hashed += index
    post = struct.pack(">Q", db_sum(after, ps))
    f += post
    hashed += post
    f += struct.pack(">Q", crc64(hashed) | FLAG)
    return bytes(f)


def forge_page(pgno, page, off, want):
    """8 bytes at `off` of `page` such that page_sum(pgno, page) == want (GF(2) solve)."""
    page = bytearray(page)
    base = page_sum(pgno, bytes(page))
    cols = []
    for i in range(64):
        page[off + i // 8] ^= 1 << (i % 8)
        cols.append(page_sum(pgno, bytes(page)) ^ base)
        page[off + i // 8] ^= 1 << (i % 8)
    diff = base ^ want
    rows = []
    for r in range(63):  # bit 63 is the flag on both sides
        m = sum(1 << c for c in range(64) if (cols[c] >> r) & 1)
        rows.append([m, (diff >> r) & 1])
    piv = []
    rank = 0
    for c in range(64):
        sel = next((r for r in range(rank, len(rows)) if (rows[r][0] >> c) & 1), None)
        if sel is None:
            continue
        rows[rank], rows[sel] = rows[sel], rows[rank]
        for r in range(len(rows)):
            if r != rank and (rows[r][0] >> c) & 1:
                rows[r][0] ^= rows[rank][0]
                rows[r][1] ^= rows[rank][1]
        piv.append(c)
        rank += 1
    if any(rows[r][1] for r in range(rank, len(rows))):
        tw.fail("cannot forge the base page")
    x = 0
    for r in range(rank):
        if rows[r][1]:
            x |= 1 << piv[r]
    for i in range(64):
        if (x >> i) & 1:
            page[off + i // 8] ^= 1 << (i % 8)
    out = bytes(page)
    if page_sum(pgno, out) != want:
        tw.fail("forged page has the wrong checksum")
    return out


# ---- helpers -----------------------------------------------------------------------

def aws(*args):
    env = dict(os.environ, AWS_PAGER="")
    p = subprocess.run(tw.aws_args() + list(args), capture_output=True, text=True, env=env,
                       timeout=300)
    if p.returncode != 0:
        tw.fail(f"aws {' '.join(args)} failed: {p.stderr.strip()}")


def put_file(data_or_path, rel):
    """Stage a source object under the local tree uploaded in one go by upload_tree()."""
    dest = os.path.join(STAGE, rel)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if isinstance(data_or_path, bytes):
        with open(dest, "wb") as f:
            f.write(data_or_path)
    else:
        shutil.copyfile(data_or_path, dest)


STAGE = None


def cli(*args, expect_rc=0):
    p = subprocess.run([tw.CLI] + list(args), capture_output=True, text=True, timeout=600)
    out = (p.stdout + p.stderr).strip()
    tw.log(f"$ tenantwal {' '.join(args)}\n    -> {p.returncode}: " + out.replace("\n", "\n    "))
    if expect_rc is not None and p.returncode != expect_rc:
        tw.fail(f"tenantwal {args[0]} exited {p.returncode}, expected {expect_rc}: {out}")
    return p.returncode, p.stdout, p.stderr


def same_db(a, b):
    p = subprocess.run([tw.SQLDIFF, a, b], capture_output=True, text=True)
    return p.returncode == 0 and not p.stdout.strip(), p.stdout[:500] + p.stderr[:200]


def states(path, n):
    """Database images after each of n transactions (rollback journal)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    rng = random.Random(3)
    out = []
    for i in range(n):
        if i == 0:
            conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        else:
            conn.execute("BEGIN")
            for _ in range(40):
                conn.execute("INSERT INTO t(v) VALUES (?)", ("x" * rng.randint(10, 300),))
            if i % 3 == 0:
                conn.execute("DELETE FROM t WHERE id % 5 = 0")
            conn.execute("COMMIT")
        with open(path, "rb") as f:
            out.append(f.read())
    conn.close()
    return out


def test():
    if not os.path.isdir(FIXTURES):
        print(f"SKIPPED: {FIXTURES} not found (the Litestream fixtures live in ../shared)")
        sys.exit(77)
    bucket = tw.require_s3()
    tw.require_built(tw.CLI)
    work = tw.tempdir("migrate")
    prefix = f"e2e-migrate-{os.getpid()}-{random.randrange(1 << 30):x}"
    src_root = f"s3://{bucket}/{prefix}/databases"
    replica = f"s3://{bucket}/{prefix}/tw"

    global STAGE
    STAGE = os.path.join(work, "stage")
    # legacy: the v0.3 fixture as is.
    v3 = os.path.join(FIXTURES, "v03-restore-ok")
    for dirpath, _, files in os.walk(os.path.join(v3, "generations")):
        for fn in files:
            full = os.path.join(dirpath, fn)
            put_file(full, os.path.join("legacy", os.path.relpath(full, v3)))
    # early: the fixture LTX on a checksum-matched base snapshot.
    ps = 4096
    with open(os.path.join(FIXTURES, "ltx-early", "database"), "rb") as f:
        database = f.read()
    ltx_name = "000000000000000d-000000000000000d.ltx"
    with open(os.path.join(FIXTURES, "ltx-early", ltx_name), "rb") as f:
        early = f.read()
    pre_sum = struct.unpack(">Q", early[40:48])[0]
    others = 0
    for p in range(1, 11):
        if p != 8:
            others ^= page_sum(p, database[(p - 1) * ps:p * ps])
    page8 = forge_page(8, database[7 * ps:8 * ps], 2000, (pre_sum ^ others) | FLAG)
    base = database[:7 * ps] + page8 + database[8 * ps:]
    tw.check(db_sum(base, ps) == pre_sum, "base snapshot matches the early LTX's pre-apply checksum")
    put_file(make_ltx(b"", base, ps, 1, 0xC, 1_700_000_000_000),
             "early/ltx/9/0000000000000001-000000000000000c.ltx")
    put_file(os.path.join(FIXTURES, "ltx-early", ltx_name), f"early/ltx/0/{ltx_name}")
    early_db = os.path.join(work, "early-expected.db")
    with open(early_db, "wb") as f:
        f.write(database)

    # synth: a current-format replica with levels 0, 1 and 9.
    st = states(os.path.join(work, "synth-live.db"), 8)
    t0 = 1_700_000_000_000
    for i in range(1, 9):
        before = st[i - 2] if i > 1 else b""
        put_file(make_ltx(before, st[i - 1], ps, i, i, t0 + 1000 * i),
                 f"synth/ltx/0/{i:016x}-{i:016x}.ltx")
    for name, data in (("ltx/1/0000000000000002-0000000000000005.ltx",
                        make_ltx(st[0], st[4], ps, 2, 5, t0 + 5000)),
                       ("ltx/9/0000000000000001-0000000000000006.ltx",
                        make_ltx(b"", st[5], ps, 1, 6, t0 + 6000))):
        put_file(data, f"synth/{name}")
    expect = {}
    for i in (4, 8):
        expect[i] = os.path.join(work, f"synth-{i}.db")
        with open(expect[i], "wb") as f:
            f.write(st[i - 1])

    # broken: a truncated LTX snapshot.
    put_file(make_ltx(b"", st[2], ps, 1, 3, t0)[:-40],
             "broken/ltx/0/0000000000000001-0000000000000003.ltx")
    aws("s3", "cp", "--quiet", "--recursive", STAGE, src_root + "/")
    tw.log("uploaded the Litestream sources to " + src_root)

    # --all with a CSV map, one name missing from the source.
    tmap = os.path.join(work, "tenants.csv")
    with open(tmap, "w") as f:
        f.write("name,tenant,db\nlegacy,acme,legacy\nearly,acme,early\nsynth,globex,synth\n"
                "broken,globex,broken\nghost,initech,ghost\n")
    rc, out, err = cli("migrate", "--all", "--from", src_root + "/", "--tenant-map", tmap,
                       "--replica", replica, expect_rc=1)
    tw.check("3 migrated, 0 skipped (already migrated), 2 failed" in out,
             "--all: 3 migrated, 2 failed (broken, ghost), continuing past failures")
    tw.check("Corruption" in err and "broken" in err, "the truncated LTX is a clear Corruption")
    tw.check("ghost" in err, "the missing source is reported")

    for tenant, db, want in (("acme", "legacy", os.path.join(FIXTURES, "v03-restore-ok",
                                                              "expected.db")),
                             ("acme", "early", early_db), ("globex", "synth", expect[8])):
        out_db = os.path.join(work, f"{tenant}-{db}.restored.db")
        tw.restore(replica, tenant, db, out_db)
        ok, detail = same_db(out_db, want)
        tw.check(ok, f"{tenant}/{db}: restore equals the expected database ({detail or 'sqldiff empty'})")
        tw.check(tw.integrity(out_db) == "ok", f"{tenant}/{db}: integrity_check ok")

    rc, out, err = cli("migrate", "--all", "--from", src_root, "--tenant-map", tmap,
                       "--replica", replica, expect_rc=1)
    tw.check("0 migrated, 3 skipped (already migrated), 2 failed" in out,
             "re-running --all skips what is already migrated")

    # Single database, an earlier point by time, JSON report.
    rc, out, err = cli("migrate", "--from", f"{src_root}/synth", "--tenant", "globex", "--db",
                       "synth4", "--replica", replica, "--timestamp", "2023-11-14T22:13:24.500Z",
                       "--json")
    tw.check('"sourceTxid":4' in out and '"pages":' in out, "--timestamp picks txid 4")
    out_db = os.path.join(work, "synth4.restored.db")
    tw.restore(replica, "globex", "synth4", out_db)
    ok, detail = same_db(out_db, expect[4])
    tw.check(ok, f"globex/synth4 equals the state after txid 4 ({detail or 'sqldiff empty'})")
    rc, out, err = cli("migrate", "--from", f"{src_root}/synth", "--tenant", "globex", "--db",
                       "synth4", "--replica", replica, expect_rc=1)
    tw.check("already holds" in err, "a second migrate into the same database is refused")

    # import of a plain file.
    plain = os.path.join(work, "plain.db")
    conn = sqlite3.connect(plain)
    conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO notes(body) VALUES (?)", [(f"note {i}" * 20,) for i in range(500)])
    conn.commit()
    conn.close()
    cli("import", "--tenant", "hooli", "--db", "notes", plain, "--replica", replica)
    out_db = os.path.join(work, "notes.restored.db")
    tw.restore(replica, "hooli", "notes", out_db)
    ok, detail = same_db(out_db, plain)
    tw.check(ok, f"hooli/notes: import then restore equals the file ({detail or 'sqldiff empty'})")
    rc, out, err = cli("import", "--tenant", "hooli", "--db", "bad", os.path.join(work, "tenants.csv"),
                       "--replica", replica, expect_rc=1)
    tw.check("not a SQLite database" in err, "importing a non-database fails clearly")


if __name__ == "__main__":
    tw.main(test)
