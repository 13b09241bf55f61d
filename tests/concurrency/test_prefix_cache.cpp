// Contexts in several threads sharing one prefix cache, while entries come
// in, are read and are evicted, give the single-threaded answers of contexts
// without a cache (run under ThreadSanitizer in CI).
#include <thread>

#include "../prefix/prefix_util.hpp"

namespace test_prefix_cache {  // own names: the area compiles as one translation unit

using namespace prefix_test;

TEST_CASE("four threads sharing one prefix cache give the single-threaded answers") {
    const auto model = Model::load(kModel);
    const std::vector<Request> reqs = {query("0000.png", "A photo of"), query("0005.png", "A photo of"),
                                       query("0010.png", ""), query("0000.png", "A photo of four"),
                                       {"<image>1 dotted green star<|endofchunk|><image>", {image("0006.png"), image("0005.png")}},
                                       {"<image>1 dotted green star<|endofchunk|><image>1", {image("0006.png"), image("0007.png")}}};
    std::vector<Answer> want;
    for (const auto& q : reqs) want.push_back(fresh(model, q, 2));

    // a budget of about two prompts too, so that entries are evicted while others read them
    for (std::size_t budget : {std::size_t(64) << 20, std::size_t(1) << 20}) {
        CAPTURE(budget);
        auto cache = std::make_shared<PrefixCache>(budget);
        const int n_threads = 4;
        std::vector<std::vector<Answer>> got(n_threads, std::vector<Answer>(reqs.size()));
        std::vector<std::thread> threads;
        for (int t = 0; t < n_threads; ++t)
            threads.emplace_back([&, t] {
                Context ctx(model, {2, nullptr}, cache);
                for (std::size_t k = 0; k < reqs.size() + 2; ++k) {
                    const std::size_t i = (k + std::size_t(t) * 2) % reqs.size();
                    got[std::size_t(t)][i] = answer(ctx, reqs[i]);
                }
            });
        for (auto& th : threads) th.join();
        for (int t = 0; t < n_threads; ++t)
            for (std::size_t i = 0; i < reqs.size(); ++i) {
                CAPTURE(t);
                CAPTURE(i);
                expect_same(got[std::size_t(t)][i], want[i]);
            }
        const auto s = cache->stats();
        CHECK(s.hits > 0);
        CHECK(s.bytes <= budget);
        if (budget == std::size_t(1) << 20) CHECK(s.evictions > 0);
    }
}

}  // namespace test_prefix_cache
