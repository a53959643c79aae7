#!/usr/bin/env node
// tenantwal from Node: load the extension with better-sqlite3, then write a
// database through the tenantwal VFS. tenantwald (same TENANTWAL_RING)
// replicates every commit.
//
//   TENANTWAL_RING=... node writer.js --ext /path/to/tenantwal[.so] \
//       --db /srv/tenants/acme/orders.db [--txns 50] [--rows 20]
//
// Prints one JSON line: {"db": ..., "txns": N, "rows": N}.
'use strict';
const Database = require('better-sqlite3');

function args(argv) {
  const a = { txns: 50, rows: 20 };
  for (let i = 2; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    a[k] = ['txns', 'rows'].includes(k) ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!a.ext || !a.db) throw new Error('usage: writer.js --ext PATH --db PATH [--txns N] [--rows N]');
  return a;
}

const a = args(process.argv);
// The VFS is process-wide: loading the extension into any connection
// registers it. better-sqlite3 opens files without SQLITE_OPEN_URI, so
// "?vfs=tenantwal" is not available: TENANTWAL_DEFAULT_VFS=1 makes tenantwal
// the default VFS when the extension loads (include/tenantwal/tenantwal.h).
process.env.TENANTWAL_DEFAULT_VFS = '1';
const loader = new Database(':memory:');
loader.loadExtension(a.ext);
loader.close();

const db = new Database(a.db);
db.pragma('journal_mode = WAL');
db.exec(`CREATE TABLE IF NOT EXISTS orders(
  id INTEGER PRIMARY KEY, customer TEXT NOT NULL, amount REAL NOT NULL, note BLOB)`);
const insert = db.prepare('INSERT INTO orders(customer, amount, note) VALUES (?, ?, randomblob(?))');
const update = db.prepare('UPDATE orders SET amount = amount * 1.1 WHERE id % 7 = ?');
const txn = db.transaction((t) => {
  for (let r = 0; r < a.rows; r++) insert.run(`customer-${(t * 31 + r) % 97}`, t + r / 100, 50 + (r % 200));
  update.run(t % 7);
});
for (let t = 0; t < a.txns; t++) txn(t);
const rows = db.prepare('SELECT count(*) AS n FROM orders').get().n;
// The status table shows what this host's daemon has replicated.
const st = db.prepare("SELECT state, local_txid FROM tenantwal_status WHERE path = ?").get(a.db);
db.close();
console.log(JSON.stringify({ db: a.db, txns: a.txns, rows, status: st || null }));
