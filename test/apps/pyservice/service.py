# warm's sample Python service: it imports heavy standard modules and builds data (about
# a second), then answers each line on stdin with one line on stdout, and writes
# /tmp/ready.
import time

start = time.time()
import asyncio, decimal, email.parser, http.client, json, random, re, sqlite3, statistics, uuid, xml.etree.ElementTree  # noqa: E401,F401

state = uuid.uuid4().hex[:12]
table = {i: str(i * 7919) for i in range(600_000)}
db = sqlite3.connect(":memory:")
db.execute("create table t (k integer primary key, v text)")
db.executemany("insert into t values (?, ?)", ((k, v) for k, v in list(table.items())[:100_000]))
while time.time() - start < 1.0:
    json.dumps(list(table.items())[:2000])
open("/tmp/ready", "w").close()
print("ready after %.0fms" % ((time.time() - start) * 1000), flush=True)
import sys
for line in sys.stdin:
    line = line.strip()
    (v,) = db.execute("select v from t where k = ?", (len(line),)).fetchone()
    print("reply %s state=%s v=%s" % (line, state, v), flush=True)
