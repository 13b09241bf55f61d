// doctest's main. The tests run with an executor of all hardware threads on
// the main thread (as the command does by default), so that the kernels'
// parallel paths are exercised; tests that need another count make their own.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <flamingo/core/executor.hpp>

int main(int argc, char** argv) {
    flamingo::Executor ex(std::max(2, flamingo::Executor::hardware_threads()));
    flamingo::Executor::Scope use(ex);
    return doctest::Context(argc, argv).run();
}
