#pragma once
// `flamingo serve`: the model over HTTP (SPEC section 5). Compiled on its own
// (serve.cpp, built when cpp-httplib is installed) so the rest of the command
// does not depend on the HTTP library.
#include <cstddef>
#include <memory>
#include <string>

#include <flamingo/flamingo.hpp>

namespace flamingo::serve {

struct Options {
    std::string host = "127.0.0.1";
    int port = 8080;            // 0: any free port (the one taken is printed on stderr)
    std::size_t parallel = 1;   // workers, each with a context of its own on the one model
    int threads = 1;            // all workers together
    std::string api_key;        // when set, /v1/* and /metrics need "Authorization: Bearer KEY"
    std::size_t queue = 8;      // requests that may wait for a worker (0: none); past them 503
    std::size_t prefix_cache_mb = 256;  // prompt prefixes and media the workers share (0: no cache)
    int body_timeout = 30;      // seconds a request's body may take to arrive after its headers; past them 408
    // Sequences (a beam search: one per beam) per decoding step of the loop
    // the workers' generations share (generate/batcher.hpp; its kernels use
    // `threads`); 0: each worker decodes alone.
    std::size_t batch = 0;
};

// Serves until SIGINT or SIGTERM; returns the process's exit status.
int run(const std::shared_ptr<const Model>& model, const Options& o);

}  // namespace flamingo::serve
