// tenantwal CLI: what the subcommands share.
//
// Each subcommand lives in its own file (cmd_restore.cc, cmd_ls.cc, later
// cmd_verify.cc, cmd_status.cc, cmd_migrate.cc) and exposes one Register*
// function that adds its CLI11 subcommand and returns it with the function
// that runs it once the command line has been parsed. cli.cc only dispatches. Every
// runner returns the process exit code (0 only on full success, 1 on any
// error) and reports errors as one line on stderr: "tenantwal: CMD: message".
// Nothing here throws: CLI11's parse exceptions are caught in cli.cc.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "store/object_store.h"

namespace tw {
namespace cli {

// A registered subcommand: its CLI11 app and the function that runs it once
// parsed (returns the exit code).
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// Replica and S3 connection flags, shared by every command that reads a replica.
struct ReplicaFlags {
  std::string url;       // --replica s3://bucket[/prefix] | file:///abs/path
  std::string endpoint;  // --endpoint, overrides AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL
  std::string region;    // --region, overrides AWS_REGION/AWS_DEFAULT_REGION
  std::string ca_file;   // --ca-file, PEM bundle for a private CA
};

// Adds --replica (required), --endpoint, --region and --ca-file to `cmd`.
void AddReplicaFlags(CLI::App* cmd, ReplicaFlags* flags);

// Opens the replica: StoreOptions::FromEnv() overridden by the flags.
Status OpenReplica(const ReplicaFlags& flags, std::unique_ptr<ObjectStore>* out);

// Prints "tenantwal: CMD: message" on stderr and returns 1. The status code
// name is included except for InvalidArgument (the message says it all).
int Fail(std::string_view cmd, const Status& s);

// Prints "tenantwal: CMD: warning: message" on stderr.
void Warn(std::string_view cmd, std::string_view message);

// Validates a tenant or database name given as flag `flag` (tw::ValidName).
Status CheckName(std::string_view flag, const std::string& name);

// Unix microseconds as RFC 3339 UTC with microseconds, e.g.
// "2024-01-02T03:04:05.000123Z"; "-" for 0 (unknown).
std::string Rfc3339(int64_t unix_us);

// `s` as a JSON string literal, quotes included (RFC 8259 escaping).
std::string JsonString(std::string_view s);

// The subcommands.
Command RegisterRestore(CLI::App* app);
Command RegisterLs(CLI::App* app);
Command RegisterMigrate(CLI::App* app);  // cmd_migrate.cc
Command RegisterImport(CLI::App* app);   // cmd_import.cc
Command RegisterVerify(CLI::App* app);   // cmd_verify.cc
Command RegisterStatus(CLI::App* app);   // cmd_status.cc

}  // namespace cli
}  // namespace tw
