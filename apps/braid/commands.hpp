// Subcommands of the braid CLI; each file adds one to the app.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

namespace braid::cli {

// Each registers a subcommand whose callback sets `exit_code`.
void add_run(CLI::App& app, int& exit_code);
void add_verify(CLI::App& app, int& exit_code);
void add_inspect(CLI::App& app, int& exit_code);
void add_init(CLI::App& app, int& exit_code);
void add_bench(CLI::App& app, int& exit_code);
void add_train(CLI::App& app, int& exit_code);
void add_tokenizer(CLI::App& app, int& exit_code);
void add_plot(CLI::App& app, int& exit_code);
void add_eval(CLI::App& app, int& exit_code);
void add_compare(CLI::App& app, int& exit_code);
void add_serve(CLI::App& app, int& exit_code);
void add_quantize(CLI::App& app, int& exit_code);

// The command line as typed ("braid" and the arguments, shell-quoted where needed).
const std::string& invocation();

// Thrown by a command stopped by SIGINT / SIGTERM after saving its work; exit code 130.
struct Interrupted {};

}  // namespace braid::cli
