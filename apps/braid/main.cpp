// braid: run, verify, inspect, initialise, train and benchmark hybrid sequence models.
#include <cstdio>
#include <exception>
#include <string>

#include "commands.hpp"
#include "core/error.hpp"
#include "core/sysinfo.hpp"

namespace braid::cli {

namespace {
std::string g_invocation = "braid";
}

const std::string& invocation() { return g_invocation; }

}  // namespace braid::cli

int main(int argc, char** argv) {
  braid::retain_freed_memory();  // every command that trains or evaluates reallocates per sequence
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool plain = !arg.empty() && arg.find_first_not_of(
                                           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                           "-_=.,/:+@%") == std::string::npos;
    std::string quoted = "'";
    for (char ch : arg) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    braid::cli::g_invocation += " " + (plain ? arg : quoted + "'");
  }
  CLI::App app{"braid: an engine for hybrid long-context sequence models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "braid 0.1.0");
  int exit_code = 0;
  braid::cli::add_run(app, exit_code);
  braid::cli::add_verify(app, exit_code);
  braid::cli::add_inspect(app, exit_code);
  braid::cli::add_init(app, exit_code);
  braid::cli::add_bench(app, exit_code);
  braid::cli::add_train(app, exit_code);
  braid::cli::add_tokenizer(app, exit_code);
  braid::cli::add_plot(app, exit_code);
  braid::cli::add_eval(app, exit_code);
  braid::cli::add_compare(app, exit_code);
  braid::cli::add_serve(app, exit_code);
  braid::cli::add_quantize(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const braid::cli::Interrupted&) {
    return 130;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "braid: error: %s\n", e.what());
    return 2;
  } catch (const braid::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "braid: error: %s\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "braid: error: out of memory\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "braid: error: %s\n", e.what());
    return 2;
  }
  return exit_code;
}
