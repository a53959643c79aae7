// tenantwald: the per-host replication daemon (command line and lifecycle).
//
//   tenantwald --root DIR --replica URL [--api 127.0.0.1:PORT] [--api-token-file F]
//              [--metrics-db-label-limit N]
//              [--sync-interval 1s] [--spool DIR] [--spool-max-bytes 1GiB]
//              [--ring NAME] [--config FILE]
//
// SIGHUP re-reads --config (an invalid file is refused whole; the old
// settings stay). Precedence of settings: tenants.h.
//
// Runs until SIGINT/SIGTERM, then flushes what it can (up to --shutdown-grace)
// and exits 0. Exit 2 for bad flags or setup, 1 for runtime failure.
#include <grp.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "api.h"
#include "log.h"
#include "metrics.h"
#include "replicator.h"
#include "tenantwal/tenantwal.h"

namespace {

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_reload = 0;
void OnSignal(int) { g_stop = 1; }
void OnHup(int) { g_reload = 1; }


}  // namespace

int main(int argc, char** argv) {
  // glibc gives each thread that allocates its own arena (up to 8 per core)
  // and keeps freed memory in them: with 50,000 databases, a few large API
  // responses and snapshots spread over a dozen threads left ~20 KB of
  // resident garbage per database. Two arenas and a 128 KiB trim threshold
  // keep it near the live heap (~1.6 KB per idle database; docs/BENCHMARKS.md).
  mallopt(M_ARENA_MAX, 2);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024);
  CLI::App app{
      "tenantwald: replicates every SQLite database written through the tenantwal VFS on\n"
      "this host to S3 (or a file:// replica), continuously, with point-in-time restore.\n"
      "Databases live at ROOT/{tenant}/{db}.db. S3 credentials and endpoint come from the\n"
      "AWS_* environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,\n"
      "AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL).",
      "tenantwald"};
  twd::Options o;
  o.store = tw::StoreOptions::FromEnv();
  o.ring_name = tw::ring::DefaultRingName();
  std::string sync = "1s", level = "info", grace = "10s", endpoint, region, ca_file, config;
  std::string bypass = "15s";
  std::string spool_max = "1GiB";
  twd::ApiOptions api_opts;
  uint64_t ring_mb = o.ring.ring_bytes >> 20;
  app.add_option("--root", o.root, "Directory holding {tenant}/{db}.db files")->required();
  app.add_option("--replica", o.replica_url, "Replica URL: s3://bucket[/prefix] or file:///path")
      ->required();
  app.add_option("--api", o.api_addr, "Serve the REST API on HOST:PORT (e.g. 127.0.0.1:7070)");
  app.add_option("--api-token-file", api_opts.token_file,
                 "Require 'Authorization: Bearer TOKEN' on the API; TOKEN is this file's content");
  app.add_option("--metrics-db-label-limit", api_opts.metrics_db_label_limit,
                 "Above this many databases /metrics aggregates per tenant (no db label)")
      ->capture_default_str();
  app.add_option("--sync-interval", sync, "Max time a commit waits before upload (500ms, 1s, 2m)")
      ->capture_default_str();
  app.add_option("--bypass-check-interval", bypass,
                 "How often to look for changes made outside the VFS (0 = never)")
      ->capture_default_str();
  std::string snap_iv = "24h", retention = "7d", exact = "24h", l1 = "1m", l2 = "1h",
              del_grace = "5m", ret_check = "1h";
  bool no_compaction = false;
  app.add_option("--snapshot-interval", snap_iv,
                 "Snapshot each database that changed at least this often, in its current "
                 "generation (0 = off: snapshots only when continuity is in doubt)")
      ->capture_default_str();
  app.add_option("--max-concurrent-snapshots", o.snapshotters,
                 "At most this many snapshots run at once on this host")
      ->capture_default_str();
  app.add_option("--retention", retention,
                 "Keep every restore point of this recent past (e.g. 7d, 36h)")
      ->capture_default_str();
  app.add_option("--exact-window", exact,
                 "Restore points stay exact (every transaction) for this recent past; older "
                 "compacted ranges keep one point per --compaction-l1 span")
      ->capture_default_str();
  app.add_option("--compaction-l1", l1, "Compaction level 1 span (merge segments per span)")
      ->capture_default_str();
  app.add_option("--compaction-l2", l2, "Compaction level 2 span")->capture_default_str();
  app.add_flag("--no-compaction", no_compaction, "Do not compact segments");
  app.add_option("--delete-grace", del_grace,
                 "Delete superseded or expired objects only this long after they became so")
      ->capture_default_str();
  app.add_option("--retention-check-interval", ret_check,
                 "List a database's replica for retention at most this often (only after "
                 "uploads)")
      ->capture_default_str();
  app.add_option("--spool", o.spool_dir, "Local spool directory (default ROOT/.tenantwal/spool)");
  app.add_option("--spool-max-bytes", spool_max,
                 "Bound on segments waiting in the spool (e.g. 512MiB, 1GiB; 0 = unbounded). "
                 "When reached, the databases with the oldest pending data lose it and are "
                 "snapshotted again")
      ->capture_default_str();
  app.add_option("--ring", o.ring_name, "Shared-memory ring name (env TENANTWAL_RING)")
      ->capture_default_str();
  app.add_option("--ring-size-mb", ring_mb, "Ring size in MiB if tenantwald creates it")
      ->capture_default_str();
  app.add_option("--ring-slots", o.ring.slots, "Registry slots if tenantwald creates the ring")
      ->capture_default_str();
  std::string ring_group;
  app.add_option("--ring-group", ring_group,
                 "Create the ring 0660 with this group, for applications running as other users "
                 "in that group (default: 0600, owner only)");
  app.add_option("--uploaders", o.uploaders,
                 "Concurrent S3 uploads (each a thread with its own connection); the ceiling "
                 "on PUTs per second is about uploaders / PUT latency")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--endpoint", endpoint, "S3 endpoint URL (overrides AWS_ENDPOINT_URL*)");
  app.add_option("--region", region, "S3 region (overrides AWS_REGION)");
  app.add_option("--ca-file", ca_file, "PEM file of CA certificates for S3 TLS");
  app.add_option("--config", config,
                 "TOML file of global defaults and per-tenant settings (docs/OPERATIONS.md); "
                 "re-read on SIGHUP")
      ->check(CLI::ExistingFile);
  uint64_t spool_db_mb = o.spool_max_db_bytes >> 20;
  app.add_option("--spool-max-db-mb", spool_db_mb,
                 "Sealed segments one database may keep in the spool (MiB); beyond it they are "
                 "dropped and a new snapshot replaces them")
      ->capture_default_str();
  app.add_option("--log-level", level, "debug, info, warn or error")->capture_default_str();
  app.add_option("--shutdown-grace", grace, "Time to flush at shutdown")->capture_default_str();
  app.set_version_flag("--version", TENANTWAL_VERSION);
  CLI11_PARSE(app, argc, argv);

  twd::Level lv;
  if (!twd::ParseLogLevel(level, &lv)) {
    fprintf(stderr, "tenantwald: --log-level must be debug, info, warn or error\n");
    return 2;
  }
  twd::SetLogLevel(lv);
  if (!twd::ParseDuration(sync, &o.sync_interval_us)) {
    fprintf(stderr, "tenantwald: --sync-interval: not a duration: %s (try 500ms, 1s, 2m)\n",
            sync.c_str());
    return 2;
  }
  if (bypass == "0") {
    o.bypass_check_us = 0;
  } else if (!twd::ParseDuration(bypass, &o.bypass_check_us)) {
    fprintf(stderr, "tenantwald: --bypass-check-interval: not a duration: %s\n", bypass.c_str());
    return 2;
  }
  {
    auto& m = o.maintenance;
    struct {
      const char* flag;
      std::string* text;
      int64_t* us;
    } durs[] = {{"--retention", &retention, &m.retention_us},
                {"--exact-window", &exact, &m.exact_window_us},
                {"--compaction-l1", &l1, &m.l1_span_us},
                {"--compaction-l2", &l2, &m.l2_span_us},
                {"--delete-grace", &del_grace, &m.delete_grace_us},
                {"--retention-check-interval", &ret_check, &m.retention_check_us},
                {"--snapshot-interval", &snap_iv, &m.snapshot_interval_us}};
    for (auto& x : durs) {
      if (*x.text == "0" && (x.us == &m.snapshot_interval_us || x.us == &m.delete_grace_us)) {
        *x.us = 0;
        continue;
      }
      if (!twd::ParseLongDuration(*x.text, x.us)) {
        fprintf(stderr, "tenantwald: %s: not a duration: %s (try 90s, 10m, 24h, 7d)\n", x.flag,
                x.text->c_str());
        return 2;
      }
    }
    if (m.l2_span_us < m.l1_span_us || m.l2_span_us % m.l1_span_us != 0) {
      fprintf(stderr, "tenantwald: --compaction-l2 must be a multiple of --compaction-l1\n");
      return 2;
    }
    if (o.snapshotters < 1 || o.snapshotters > 64) {
      fprintf(stderr, "tenantwald: --max-concurrent-snapshots must be 1..64\n");
      return 2;
    }
    m.compaction = !no_compaction;
  }
  if (!twd::ParseByteSize(spool_max, &o.spool_max_bytes)) {
    fprintf(stderr, "tenantwald: --spool-max-bytes: not a size: %s (try 512MiB, 1GiB, 0)\n",
            spool_max.c_str());
    return 2;
  }
  int64_t grace_us = 0;
  if (!twd::ParseDuration(grace, &grace_us)) {
    fprintf(stderr, "tenantwald: --shutdown-grace: not a duration: %s\n", grace.c_str());
    return 2;
  }
  o.config_path = config;
  if (spool_db_mb < 1) {
    fprintf(stderr, "tenantwald: --spool-max-db-mb must be at least 1\n");
    return 2;
  }
  o.spool_max_db_bytes = spool_db_mb << 20;
  if (!ring_group.empty()) {
    struct group* g = getgrnam(ring_group.c_str());
    if (!g) {
      fprintf(stderr, "tenantwald: --ring-group: no such group: %s\n", ring_group.c_str());
      return 2;
    }
    o.ring.group = int(g->gr_gid);
  }
  if (!endpoint.empty()) o.store.endpoint = endpoint;
  if (!region.empty()) o.store.region = region;
  if (!ca_file.empty()) o.store.ca_file = ca_file;
  o.ring.ring_bytes = ring_mb << 20;

  if (!o.api_addr.empty()) {
    size_t colon = o.api_addr.rfind(':');
    int port = colon == std::string::npos ? -1 : atoi(o.api_addr.c_str() + colon + 1);
    if (colon == std::string::npos || colon == 0 || port < 0 || port > 65535 ||
        o.api_addr.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
      fprintf(stderr, "tenantwald: --api wants HOST:PORT (e.g. 127.0.0.1:7070), got %s\n",
              o.api_addr.c_str());
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct sigaction hup = {};
  hup.sa_handler = OnHup;
  sigaction(SIGHUP, &hup, nullptr);
  // The main thread only waits for these signals: block them before any
  // thread starts (threads inherit the mask, so they are delivered to the
  // main thread) and sleep in sigsuspend() instead of polling the flags.
  sigset_t block, waitmask;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &block, &waitmask);
  sigdelset(&waitmask, SIGINT);
  sigdelset(&waitmask, SIGTERM);
  sigdelset(&waitmask, SIGHUP);

  // Compaction waits this long after a span ends for its last segments.
  o.maintenance.settle_us = 2 * o.sync_interval_us + 2000000;
  twd::Replicator rep(o);
  tw::Status st = rep.Start();
  if (!st.ok()) {
    twd::Log(twd::Level::kError, "cannot start", {{"error", st.ToString()}});
    fprintf(stderr, "tenantwald: %s\n", st.ToString().c_str());
    return 2;
  }
  twd::ApiServer api(&rep, api_opts);
  if (!o.api_addr.empty()) {
    st = api.Start(o.api_addr);
    if (!st.ok()) {
      fprintf(stderr, "tenantwald: %s\n", st.ToString().c_str());
      rep.Stop(0);
      return 2;
    }
  }
  while (!g_stop) {
    if (!g_reload) sigsuspend(&waitmask);  // returns after a handler ran
    if (g_reload) {
      g_reload = 0;
      twd::Log(twd::Level::kInfo, "SIGHUP: reloading the configuration");
      rep.ReloadConfig();  // logs and keeps the error for /api/health
    }
  }
  twd::Log(twd::Level::kInfo, "shutting down");
  api.Stop();
  rep.Stop(int(grace_us / 1000));
  return 0;
}
