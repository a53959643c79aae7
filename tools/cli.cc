// tenantwal: the command-line tool.
//
//   tenantwal restore --replica URL --tenant T --db D -o OUT.db [--force] [--txid N] [--json]
//   tenantwal ls --replica URL [--tenant T] [--db D] [--json]
//   tenantwal migrate --from LITESTREAM_URL --tenant T --db D --replica URL (or --all)
//   tenantwal import --tenant T --db D FILE.db --replica URL
//
// This file only builds the CLI11 app and dispatches; each subcommand is its
// own file (cmd_*.cc, see cmd.h). CLI11 reports parse errors by exception;
// they are caught here and turned into one-line errors (exit 1), --help and
// --version exit 0. No exception escapes main().
#include <exception>
#include <iostream>
#include <vector>
#include <string>

#include "cmd.h"

#ifndef TENANTWAL_VERSION
#define TENANTWAL_VERSION "unknown"
#endif

namespace {

// The subcommand named on the command line, for error prefixes ("" if none).
std::string SubcommandName(CLI::App& app, int argc, char** argv) {
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
      if (sub->get_name() == a) return a;
  }
  return "";
}

int Main(int argc, char** argv) {
  CLI::App app("tenantwal: restore and inspect SQLite replicas made by tenantwald", "tenantwal");
  app.set_version_flag("--version", "tenantwal " TENANTWAL_VERSION);
  app.require_subcommand(1);
  app.fallthrough(false);
  std::vector<tw::cli::Command> commands = {
      tw::cli::RegisterRestore(&app),
      tw::cli::RegisterLs(&app),
      tw::cli::RegisterVerify(&app),
      tw::cli::RegisterMigrate(&app),
      tw::cli::RegisterImport(&app),
      tw::cli::RegisterStatus(&app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string sub = SubcommandName(app, argc, argv);
    if (sub.empty() && argc > 1 && argv[1][0] != '-') {
      std::cerr << "tenantwal: unknown command '" << argv[1] << "' (see tenantwal --help)"
                << std::endl;
      return 1;
    }
    std::cerr << "tenantwal: " << (sub.empty() ? "" : sub + ": ") << e.what()
              << " (see tenantwal " << (sub.empty() ? "" : sub + " ") << "--help)" << std::endl;
    return 1;
  }
  for (auto& c : commands)
    if (c.app->parsed()) return c.run();
  std::cerr << "tenantwal: no command given (see tenantwal --help)" << std::endl;
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "tenantwal: internal error: " << e.what() << std::endl;
  } catch (...) {
    std::cerr << "tenantwal: internal error" << std::endl;
  }
  return 1;
}
