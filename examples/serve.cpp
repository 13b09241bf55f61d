// `flamingo serve`: HTTP/1.1 on cpp-httplib, JSON bodies, the tasks of
// `flamingo batch` (shared through batch.hpp) plus OpenAI's chat completions.
// Requests wait in a bounded queue for one of --parallel workers; each worker
// holds a conversation (and so a context) of its own over the one model. With
// --batch the workers' decoding steps run together in one shared loop.
#include "serve.hpp"

#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <cerrno>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include <flamingo/chat.hpp>

#include "batch.hpp"
#include "serve_page.hpp"

namespace flamingo::serve {
namespace {

using nlohmann::json;
using ojson = nlohmann::ordered_json;
using steady = std::chrono::steady_clock;

constexpr std::size_t kMaxBody = 16u << 20;  // bytes of a request body; more is 413
constexpr std::size_t kMaxImages = 16;       // images of one request
constexpr std::uint64_t kMaxDecoded = 256u << 20;  // their decoded pixels (one 8192x8192 image is 192 MiB)
constexpr std::size_t kMaxStops = 4;         // chat "stop" strings
constexpr int kIdleSeconds = 5;              // silence that closes a connection owing a request or taking an answer
constexpr auto kWatch = std::chrono::milliseconds(50);  // how often a waiting handler looks whether its client is gone

std::string dump(const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); }

ojson error_object(const std::string& message, const std::string& type) {
    return {{"error", {{"message", message}, {"type", type}}}};
}

// A client that went away: its request stops at the next token.
struct Cancelled {};

// The socket of the connection `req` came on, found among the process's
// descriptors by its two ends (cpp-httplib 0.11 does not hand it to handlers
// and has no is_connection_closed); -1 when not found. The handler's thread
// holds the connection open, so the descriptor stays its own meanwhile.
int connection_socket(const httplib::Request& req) {
    auto end_of = [](int fd, bool peer, std::string& host, int& port) {
        sockaddr_storage a{};
        socklen_t n = sizeof a;
        if ((peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&a), &n)
                  : getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n)) != 0)
            return false;
        char h[NI_MAXHOST], s[NI_MAXSERV];
        if (getnameinfo(reinterpret_cast<sockaddr*>(&a), n, h, sizeof h, s, sizeof s, NI_NUMERICHOST | NI_NUMERICSERV))
            return false;
        host = h, port = std::atoi(s);
        return true;
    };
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
        const std::string name = e.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
        const int fd = std::stoi(name);
        std::string host;
        int port = 0;
        if (!end_of(fd, true, host, port) || port != req.remote_port || host != req.remote_addr) continue;
        if (end_of(fd, false, host, port) && port == req.local_port) return fd;
    }
    return -1;
}

// True when the client has closed its end (or reset it): a read would give
// end-of-file or an error rather than wait. Bytes a client sent ahead (a
// pipelined request) are left unread.
bool peer_closed(int fd) {
    char c;
    const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// What a handler and the worker running its request share.
struct Exchange {
    bool stream = false;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::string> events;  // SSE payloads not yet sent (stream)
    bool done = false;
    int status = 0;
    std::string body;  // the answer (not stream) or the error
    std::atomic<bool> cancelled{false};
    std::size_t prompt_tokens = 0, completion_tokens = 0;

    void push(std::string event) {
        {
            std::lock_guard lock(mu);
            events.push_back(std::move(event));
        }
        cv.notify_all();
    }
    void finish(int s, std::string b) {
        {
            std::lock_guard lock(mu);
            status = s, body = std::move(b), done = true;
        }
        cv.notify_all();
    }
};

struct Worker {
    Worker(const std::shared_ptr<const Model>& model, const ContextOptions& o, std::shared_ptr<PrefixCache> cache,
           std::shared_ptr<generate::Batcher> batcher)
        : conv(model, o) {
        conv.context().set_prefix_cache(std::move(cache));
        conv.context().set_batcher(std::move(batcher));
    }
    Conversation conv;  // its context serves the other tasks too
};

using Work = std::function<ojson(Worker&, Exchange&)>;

struct Job {
    Work work;
    std::shared_ptr<Exchange> ex;
};

// Prometheus counters.
class Metrics {
public:
    static constexpr std::array<double, 10> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};

    void request(const std::string& endpoint, int status, double seconds, std::size_t prompt, std::size_t generated) {
        std::lock_guard lock(mu_);
        ++requests_[{endpoint, status}];
        prompt_tokens_ += prompt, generated_tokens_ += generated;
        auto& h = latency_[endpoint];
        for (std::size_t i = 0; i < kBuckets.size(); ++i) h.counts[i] += seconds <= kBuckets[i];
        h.sum += seconds, ++h.count;
    }
    void cancelled() {
        std::lock_guard lock(mu_);
        ++cancelled_;
    }
    std::string text(std::size_t queued, std::size_t busy, const PrefixCache* cache,
                     const generate::Batcher* batcher) const {
        std::lock_guard lock(mu_);
        std::ostringstream os;
        os << "# HELP flamingo_requests_total HTTP requests by endpoint and status.\n"
           << "# TYPE flamingo_requests_total counter\n";
        for (const auto& [k, n] : requests_)
            os << "flamingo_requests_total{endpoint=\"" << k.first << "\",status=\"" << k.second << "\"} " << n << "\n";
        os << "# HELP flamingo_prompt_tokens_total Prompt tokens of answered requests.\n"
           << "# TYPE flamingo_prompt_tokens_total counter\nflamingo_prompt_tokens_total " << prompt_tokens_ << "\n"
           << "# HELP flamingo_generated_tokens_total Generated tokens.\n"
           << "# TYPE flamingo_generated_tokens_total counter\nflamingo_generated_tokens_total " << generated_tokens_
           << "\n# HELP flamingo_queue_depth Requests waiting for a worker.\n"
           << "# TYPE flamingo_queue_depth gauge\nflamingo_queue_depth " << queued << "\n"
           << "# HELP flamingo_workers_busy Workers running a request.\n"
           << "# TYPE flamingo_workers_busy gauge\nflamingo_workers_busy " << busy << "\n"
           << "# HELP flamingo_requests_cancelled_total Requests stopped because their client disconnected.\n"
           << "# TYPE flamingo_requests_cancelled_total counter\nflamingo_requests_cancelled_total " << cancelled_
           << "\n";
        if (cache) {
            const auto c = cache->stats();
            const auto metric = [&](const char* name, const char* type, const char* help, auto value) {
                os << "# HELP flamingo_prefix_cache_" << name << " " << help << "\n# TYPE flamingo_prefix_cache_" << name
                   << " " << type << "\nflamingo_prefix_cache_" << name << " " << value << "\n";
            };
            metric("hits_total", "counter", "Prompts that took a prefix's keys/values from the cache.", c.hits);
            metric("misses_total", "counter", "Prompts that found no usable prefix in the cache.", c.misses);
            metric("tokens_reused_total", "counter", "Prompt tokens whose keys/values came from the cache.", c.tokens_reused);
            metric("media_hits_total", "counter", "Images whose visual tokens came from the cache.", c.media_hits);
            metric("media_misses_total", "counter", "Images encoded because the cache did not hold them.", c.media_misses);
            metric("evictions_total", "counter", "Entries dropped to keep within the budget.", c.evictions);
            metric("bytes", "gauge", "Bytes the cache holds.", c.bytes);
            metric("budget_bytes", "gauge", "Bytes the cache may hold (--prefix-cache).", c.budget);
            metric("entries", "gauge", "Prefixes and media the cache holds.", c.prefixes + c.media);
        }
        if (batcher) {
            const auto b = batcher->stats();
            os << "# HELP flamingo_batch_sequences Sequences in the shared decoding loop now (one per beam).\n"
               << "# TYPE flamingo_batch_sequences gauge\nflamingo_batch_sequences " << b.sequences << "\n"
               << "# HELP flamingo_batch_waiting Requests waiting for room in the decoding loop.\n"
               << "# TYPE flamingo_batch_waiting gauge\nflamingo_batch_waiting " << b.waiting << "\n"
               << "# HELP flamingo_batch_size Sequences per decoding step.\n"
               << "# TYPE flamingo_batch_size histogram\n";
            std::uint64_t below = 0;
            for (std::size_t le = 1, n = 1; n < b.sizes.size(); le *= 2) {
                for (; n <= le && n < b.sizes.size(); ++n) below += b.sizes[n];
                os << "flamingo_batch_size_bucket{le=\"" << le << "\"} " << below << "\n";
            }
            os << "flamingo_batch_size_bucket{le=\"+Inf\"} " << b.steps << "\nflamingo_batch_size_sum " << b.rows
               << "\nflamingo_batch_size_count " << b.steps << "\n";
        }
        os << "# HELP flamingo_request_duration_seconds Time from the request's headers to its answer's end.\n"
           << "# TYPE flamingo_request_duration_seconds histogram\n";
        for (const auto& [e, h] : latency_) {
            for (std::size_t i = 0; i < kBuckets.size(); ++i)
                os << "flamingo_request_duration_seconds_bucket{endpoint=\"" << e << "\",le=\"" << kBuckets[i]
                   << "\"} " << h.counts[i] << "\n";
            os << "flamingo_request_duration_seconds_bucket{endpoint=\"" << e << "\",le=\"+Inf\"} " << h.count << "\n"
               << "flamingo_request_duration_seconds_sum{endpoint=\"" << e << "\"} " << h.sum << "\n"
               << "flamingo_request_duration_seconds_count{endpoint=\"" << e << "\"} " << h.count << "\n";
        }
        return os.str();
    }

private:
    struct Histogram {
        std::array<std::uint64_t, kBuckets.size()> counts{};
        double sum = 0;
        std::uint64_t count = 0;
    };
    mutable std::mutex mu_;
    std::map<std::pair<std::string, int>, std::uint64_t> requests_;
    std::map<std::string, Histogram> latency_;
    std::uint64_t prompt_tokens_ = 0, generated_tokens_ = 0, cancelled_ = 0;
};

// Workers and the bounded queue in front of them.
class Pool {
public:
    Pool(const std::shared_ptr<const Model>& model, const Options& o)
        : capacity_(o.queue), cache_(o.prefix_cache_mb ? std::make_shared<PrefixCache>(o.prefix_cache_mb << 20) : nullptr),
          batcher_(o.batch ? std::make_shared<generate::Batcher>(model->network(), o.batch,
                                                                 std::make_shared<Executor>(std::max(1, o.threads)))
                           : nullptr) {
        const int per = std::max(1, o.threads / int(o.parallel));
        for (std::size_t i = 0; i < o.parallel; ++i)
            workers_.push_back(std::make_unique<Worker>(model, ContextOptions{per, nullptr}, cache_, batcher_));
        for (auto& w : workers_) threads_.emplace_back([this, wp = w.get()] { loop(*wp); });
    }
    ~Pool() { stop(); }

    // False when every worker is taken and the queue is full (with a queue of
    // 0, whenever no worker is free).
    bool submit(Job job) {
        {
            std::lock_guard lock(mu_);
            if (stopping_ || busy_ + queue_.size() >= workers_.size() + capacity_) return false;
            queue_.push_back(std::move(job));
        }
        cv_.notify_one();
        return true;
    }
    // Finishes the running requests, fails the waiting ones.
    void stop() {
        std::deque<Job> left;
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
            left.swap(queue_);
        }
        cv_.notify_all();
        for (auto& j : left) j.ex->finish(503, dump(error_object("the server is shutting down", "server_error")));
        for (auto& t : threads_)
            if (t.joinable()) t.join();
    }
    std::size_t queued() const {
        std::lock_guard lock(mu_);
        return queue_.size();
    }
    const PrefixCache* cache() const { return cache_.get(); }
    const generate::Batcher* batcher() const { return batcher_.get(); }
    std::size_t busy() const {
        std::lock_guard lock(mu_);
        return busy_;
    }

private:
    void loop(Worker& w) {
        for (;;) {
            Job job;
            {
                std::unique_lock lock(mu_);
                cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
                if (queue_.empty()) return;
                job = std::move(queue_.front());
                queue_.pop_front();
                ++busy_;  // with the pop, so that submit counts the job as taken or waiting, never neither
            }
            auto [status, body] = execute(w, job);
            {
                std::lock_guard lock(mu_);
                --busy_;  // before the answer, so that the client's next request finds the worker free
            }
            job.ex->finish(status, std::move(body));
        }
    }
    static std::pair<int, std::string> execute(Worker& w, Job& job) {
        Exchange& ex = *job.ex;
        int status = 200;
        ojson answer;
        try {
            answer = job.work(w, ex);
        } catch (const Cancelled&) {
            status = 499, answer = error_object("the client closed the connection", "cancelled");
        } catch (const Error& e) {  // the request's content: a prompt, an option, an image, a limit
            status = 400, answer = error_object(e.what(), "invalid_request_error");
        } catch (const json::exception& e) {
            status = 400, answer = error_object(e.what(), "invalid_request_error");
        } catch (const std::bad_alloc&) {
            status = 503, answer = error_object("out of memory", "server_error");
        } catch (const std::exception& e) {
            status = 500, answer = error_object(e.what(), "server_error");
        }
        return {status, dump(answer)};
    }

    std::size_t capacity_;
    std::shared_ptr<PrefixCache> cache_;  // shared by the workers; null: none
    std::shared_ptr<generate::Batcher> batcher_;  // the workers' decoding loop; null: each decodes alone
    std::vector<std::unique_ptr<Worker>> workers_;
    std::vector<std::thread> threads_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Job> queue_;
    bool stopping_ = false;
    std::size_t busy_ = 0;  // workers running a request
};

// Text pieces of a generation as its tokens come: each piece is what the
// decoded text gained, sent once it is whole UTF-8, so the pieces add up to
// the final text.
class Pieces {
public:
    Pieces(const Model& m, std::vector<std::int32_t> stops, bool strip_leading)
        : m_(m), stops_(std::move(stops)), strip_(strip_leading) {
        stops_.push_back(m.config().eoc_token_id);
    }
    // The new piece after token t (empty when nothing whole was added).
    std::string add(std::int32_t t) {
        for (auto s : stops_)
            if (t == s) return {};
        tokens_.push_back(t);
        return advance(m_.decode(tokens_));
    }
    // What the final text adds to the pieces sent.
    std::string rest(const std::string& final_text) { return advance(final_text, true); }

private:
    std::string advance(std::string cur, bool last = false) {
        if (strip_) {
            const auto at = cur.find_first_not_of(" \t\n");
            cur.erase(0, at == std::string::npos ? cur.size() : at);
        }
        if (cur.size() <= sent_.size() || cur.compare(0, sent_.size(), sent_) != 0) return {};
        if (!last && !whole_utf8(cur)) return {};
        std::string piece = cur.substr(sent_.size());
        sent_ = std::move(cur);
        return piece;
    }
    static bool whole_utf8(const std::string& s) {
        if (s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0) return false;  // U+FFFD: bytes to come
        std::size_t i = s.size(), back = 0;
        while (i > 0 && back < 4 && (std::uint8_t(s[i - 1]) & 0xC0) == 0x80) --i, ++back;
        if (i == 0) return back == 0;
        const std::uint8_t lead = std::uint8_t(s[i - 1]);
        const std::size_t need = lead < 0x80 ? 0 : lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
        return back >= need;
    }

    const Model& m_;
    std::vector<std::int32_t> stops_;
    bool strip_;
    std::vector<std::int32_t> tokens_;
    std::string sent_;
};

// The request's record for the log line and the metrics (handlers and the
// logger run on the connection's thread).
struct Note {
    steady::time_point start = steady::now();
    std::size_t prompt_tokens = 0, completion_tokens = 0;
    int close = -1;  // a socket to shut once the answer is written (cpp-httplib would go on reading it)
};
thread_local Note note;

class Server {
public:
    Server(std::shared_ptr<const Model> model, const Options& o)
        : model_(std::move(model)), o_(o), pool_(model_, o),
          name_(std::filesystem::absolute(model_->directory()).filename().string()) {
        if (name_.empty()) name_ = std::filesystem::absolute(model_->directory()).parent_path().filename().string();
        // Enough connection threads that requests can queue up to the limit (and past it get 503).
        const std::size_t connections = o.parallel + o.queue + 4;
        http_.new_task_queue = [connections] { return new httplib::ThreadPool(connections); };
        http_.set_payload_max_length(kMaxBody);
        // cpp-httplib's timeouts hold per read or write, so a client that trickles bytes is also bounded
        // by --body-timeout in handle().
        http_.set_read_timeout(kIdleSeconds);
        http_.set_write_timeout(kIdleSeconds);
        http_.set_keep_alive_timeout(kIdleSeconds);
        // An answer's headers and body are separate writes: with Nagle's algorithm the body would wait
        // for the client's delayed ACK of the headers (40 ms on Linux), longer than a whole generation.
        http_.set_tcp_nodelay(true);
        http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
            note = Note{};
            if (o_.api_key.empty() || req.path == "/health" || req.path == "/")  // the page asks for the key itself
                return httplib::Server::HandlerResponse::Unhandled;
            if (req.get_header_value("Authorization") == "Bearer " + o_.api_key)
                return httplib::Server::HandlerResponse::Unhandled;
            res.status = 401;
            res.set_header("WWW-Authenticate", "Bearer");
            res.set_content(dump(error_object("a valid \"Authorization: Bearer KEY\" header is needed",
                                              "authentication_error")), "application/json");
            return httplib::Server::HandlerResponse::Handled;
        });
        http_.set_error_handler([](const httplib::Request&, httplib::Response& res) {
            if (!res.body.empty()) return;
            const std::string message =
                res.status == 413 ? "the request body is over the limit of " + std::to_string(kMaxBody) + " bytes"
                : res.status == 404 ? "no such endpoint"
                                    : "the request failed (HTTP " + std::to_string(res.status) + ")";
            res.set_content(dump(error_object(message, "invalid_request_error")), "application/json");
        });
        http_.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
            const double s = std::chrono::duration<double>(steady::now() - note.start).count();
            metrics_.request(endpoint(req.path), res.status, s, note.prompt_tokens, note.completion_tokens);
            std::ostringstream line;
            line << req.method << " " << req.path << " " << res.status << " " << note.prompt_tokens << "+"
                 << note.completion_tokens << " tokens " << std::llround(s * 1000) << " ms\n";
            std::cerr << line.str() << std::flush;
            if (note.close >= 0) ::shutdown(note.close, SHUT_RDWR);
            note = Note{};
        });

        http_.Get("/", [](const httplib::Request&, httplib::Response& res) {  // the chat page (serve_page.hpp)
            const std::string nonce = page::nonce();
            res.set_header("Content-Security-Policy", page::csp(nonce));
            res.set_content(page::html(nonce), "text/html; charset=utf-8");
        });
        http_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
            res.set_content(dump({{"status", "ok"}, {"model", name_}}), "application/json");
        });
        http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
            res.set_content(metrics_.text(pool_.queued(), pool_.busy(), pool_.cache(), pool_.batcher()), "text/plain; version=0.0.4");
        });
        // Bodies are read by the handlers (a ContentReader) so that their arrival can be timed.
        for (const char* task : {"generate", "score", "embed", "tokenize"})
            http_.Post(std::string("/v1/") + task,
                       [this, task = std::string(task)](const httplib::Request& req, httplib::Response& res,
                                                        const httplib::ContentReader& read) {
                           handle(req, res, read, [this, task](json body) { return task_work(task, std::move(body)); });
                       });
        http_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res,
                                                  const httplib::ContentReader& read) {
            handle(req, res, read, [this](json body) { return chat_work(std::move(body)); });
        });
    }

    int listen() {
        int port = o_.port;
        if (port == 0) {
            port = http_.bind_to_any_port(o_.host);
            check(port > 0, "cannot listen on ", o_.host);
        } else {
            check(http_.bind_to_port(o_.host, port), "cannot listen on ", o_.host, ":", port);
        }
        http_.backlog(SOMAXCONN);
        std::cerr << "flamingo: serving " << name_ << " on http://" << o_.host << ":" << port << " (" << o_.parallel
                  << " workers"
                  << (o_.batch ? ", decoding batched up to " + std::to_string(o_.batch) + " at a time" : std::string())
                  << ")\n" << std::flush;
        http_.listen_after_bind();
        pool_.stop();
        return 0;
    }
    void stop() { http_.stop(); }

private:
    static std::string endpoint(const std::string& path) {
        for (const char* e : {"/", "/health", "/metrics", "/v1/generate", "/v1/score", "/v1/embed", "/v1/tokenize",
                              "/v1/chat/completions"})
            if (path == e) return e;
        return "other";
    }

    static void answer_error(httplib::Response& res, int status, const std::string& message,
                             const std::string& type = "invalid_request_error") {
        res.status = status;
        res.set_content(dump(error_object(message, type)), "application/json");
    }

    // Reads and parses the body, queues the work, and answers (at once or as events).
    void handle(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read,
                std::function<Work(json)> make) {
        std::string text;
        bool late = false, big = false;
        const auto deadline = note.start + std::chrono::seconds(o_.body_timeout);
        const bool whole = read([&](const char* data, std::size_t n) {
            if (steady::now() > deadline) return late = true, false;
            if (text.size() + n > kMaxBody) return big = true, false;  // chunked bodies have no Content-Length to check
            text.append(data, n);
            return true;
        });
        if (late) {
            // The rest of the body is not read: the connection ends once this answer is written (the logger).
            note.close = connection_socket(req);
            res.set_header("Connection", "close");
            return answer_error(res, 408, "the request body did not arrive within " + std::to_string(o_.body_timeout) +
                                              " s (--body-timeout)", "timeout");
        }
        if (big) res.status = 413;
        if (!whole) {  // over the limit (413), or cut short or stalled for kIdleSeconds (400): worded by the error handler
            if (res.status < 400) res.status = 400;
            return;
        }
        json body = json::parse(text, nullptr, false);
        if (body.is_discarded()) return answer_error(res, 400, "malformed JSON in the request body");
        if (!body.is_object()) return answer_error(res, 400, "the request body must be a JSON object");
        auto ex = std::make_shared<Exchange>();
        if (body.contains("stream") && !body["stream"].is_null()) {
            if (!body["stream"].is_boolean()) return answer_error(res, 400, "\"stream\" must be true or false");
            ex->stream = body["stream"].get<bool>();
        }
        body.erase("stream");
        Work work;
        try {
            work = make(std::move(body));
        } catch (const std::exception& e) {
            return answer_error(res, 400, e.what());
        }
        work = [this, path = req.path, work = std::move(work)](Worker& w, Exchange& e) -> ojson {
            try {
                if (e.cancelled) throw Cancelled{};  // gone while the request waited in the queue
                return work(w, e);
            } catch (const Cancelled&) {
                metrics_.cancelled();
                std::cerr << "flamingo: " + path + " cancelled: the client closed the connection\n" << std::flush;
                throw;
            }
        };
        if (!pool_.submit({std::move(work), ex})) {
            res.set_header("Retry-After", "1");
            return answer_error(res, 503, "the server is busy: every worker is taken and the queue is full",
                                "server_busy");
        }
        // While it waits, the connection is watched: a client gone cancels its request (at the next token).
        const int fd = connection_socket(req);
        auto wait = [fd](Exchange& e, std::unique_lock<std::mutex>& lock) {
            while (!e.cv.wait_for(lock, kWatch, [&] { return e.done || !e.events.empty(); }))
                if (fd >= 0 && !e.cancelled && peer_closed(fd)) e.cancelled = true;
        };
        std::unique_lock lock(ex->mu);
        wait(*ex, lock);
        note.prompt_tokens = ex->prompt_tokens;
        if (ex->events.empty()) {  // the whole answer, or an error before the first event
            note.completion_tokens = ex->completion_tokens;
            res.status = ex->status;
            res.set_content(ex->body, "application/json");
            return;
        }
        lock.unlock();
        res.set_header("Cache-Control", "no-cache");
        // The events go out unchunked and end with the connection (shut by the logger): Node 18's
        // node-fetch, under the OpenAI Node client, takes a kept-alive chunked stream's end for a
        // "Premature close".
        res.set_header("Connection", "close");
        note.close = fd;
        res.set_content_provider("text/event-stream", [ex, wait](std::size_t, httplib::DataSink& sink) {
            std::unique_lock lock(ex->mu);
            wait(*ex, lock);
            while (!ex->events.empty()) {
                const std::string e = std::move(ex->events.front());
                ex->events.pop_front();
                lock.unlock();
                if (!sink.write(e.data(), e.size())) {
                    ex->cancelled = true;
                    return false;
                }
                lock.lock();
            }
            if (ex->done) {
                if (ex->status != 200) {
                    const std::string e = "event: error\ndata: " + ex->body + "\n\n";
                    sink.write(e.data(), e.size());
                }
                note.completion_tokens = ex->completion_tokens;
                note.prompt_tokens = ex->prompt_tokens;
                sink.done();
            }
            return true;
        });
    }

    static std::string event(const ojson& data) { return "data: " + dump(data) + "\n\n"; }

    // generate, score, embed, tokenize: batch's tasks on base64 images.
    Work task_work(const std::string& task, json body) {
        body["task"] = task;
        return [this, body = std::move(body)](Worker& w, Exchange& ex) -> ojson {
            Context& ctx = w.conv.context();
            batch::TaskHooks hooks;
            hooks.max_images = kMaxImages, hooks.max_decoded_bytes = kMaxDecoded;
            std::optional<Pieces> pieces;
            if (ex.stream && body["task"] == "generate") pieces.emplace(*model_, std::vector<std::int32_t>{}, false);
            hooks.on_token = [&](std::int32_t t) {  // streamed or not: a client gone stops the generation
                if (ex.cancelled) throw Cancelled{};
                if (pieces)
                    if (auto p = pieces->add(t); !p.empty()) ex.push(event({{"text", p}}));
            };
            hooks.on_step = [&] {  // beam search: its tokens come at the end, a client gone stops it too
                if (ex.cancelled) throw Cancelled{};
            };
            w.conv.reset();  // the session is the conversation's too
            ojson r = batch::run_task(ctx, body, hooks);
            if (r.contains("usage")) {
                ex.prompt_tokens = r["usage"]["prompt_tokens"].get<std::size_t>();
                ex.completion_tokens = r["usage"]["completion_tokens"].get<std::size_t>();
            } else if (r.contains("tokens")) {
                ex.prompt_tokens = r["tokens"].size();
            }
            if (ex.stream) {
                if (pieces)
                    if (auto p = pieces->rest(r["text"].get<std::string>()); !p.empty()) ex.push(event({{"text", p}}));
                ex.push("event: result\n" + event(r));
            }
            return r;
        };
    }

    // OpenAI's chat completions on the model's chat template.
    Work chat_work(json body) {
        const Model& m = *model_;
        // Fields this server does not use (model, user, ...) are OpenAI's and let be.
        auto need = [&](bool ok, const std::string& msg) { check(ok, msg); };
        need(body.contains("messages") && body["messages"].is_array() && !body["messages"].empty(),
             "\"messages\" must be a non-empty list");
        if (body.contains("n") && !body["n"].is_null())
            need(body["n"].is_number_integer() && body["n"].get<long long>() == 1, "\"n\" must be 1");
        generate::GenerateOptions go;
        std::optional<std::size_t> max_tokens;
        for (const char* k : {"max_tokens", "max_completion_tokens"})
            if (body.contains(k) && !body[k].is_null()) {
                need(body[k].is_number_integer() && body[k].get<long long>() >= 1 &&
                         body[k].get<long long>() <= (1 << 20),
                     std::string("\"") + k + "\" must be an integer of at least 1");
                max_tokens = body[k].get<std::size_t>();
            }
        if (body.contains("temperature") && !body["temperature"].is_null()) {
            need(body["temperature"].is_number() && body["temperature"].get<double>() >= 0 &&
                     body["temperature"].get<double>() <= 2,
                 "\"temperature\" must be a number between 0 and 2");
            if (body["temperature"].get<double>() > 0) go.temperature = body["temperature"].get<float>();
        }
        if (body.contains("top_p") && !body["top_p"].is_null()) {
            need(body["top_p"].is_number() && body["top_p"].get<double>() > 0 && body["top_p"].get<double>() <= 1,
                 "\"top_p\" must be a number in (0, 1]");
            go.top_p = body["top_p"].get<float>();
            go.top_k = 0;
        } else if (go.temperature) {
            go.top_k = 0, go.top_p = 1;  // plain sampling, as OpenAI's defaults
        }
        if (body.contains("seed") && !body["seed"].is_null()) {
            need(body["seed"].is_number_integer() && body["seed"].get<long long>() >= 0,
                 "\"seed\" must be a non-negative integer");
            go.seed = body["seed"].get<std::uint64_t>();
        }
        std::vector<std::string> stops;
        if (body.contains("stop") && !body["stop"].is_null()) {
            const json& s = body["stop"];
            need(s.is_string() || s.is_array(), "\"stop\" must be a string or a list of strings");
            if (s.is_string()) stops.push_back(s.get<std::string>());
            else
                for (const json& e : s) {
                    need(e.is_string(), "\"stop\" must be a string or a list of strings");
                    stops.push_back(e.get<std::string>());
                }
            need(stops.size() <= kMaxStops, "at most 4 \"stop\" strings");
        }
        for (const std::string& s : stops) {
            const auto ids = m.tokenizer().encode(s, false);
            check(ids.size() == 1, "stop string \"", s, "\" is ", ids.size(),
                  " tokens; this server stops only at strings of one token");
            go.stop_tokens.push_back(ids[0]);
        }
        // The messages, checked before the request waits for a worker.
        struct Message {
            std::string role, text;
            std::vector<std::string> images;
        };
        std::vector<Message> messages;
        std::size_t n_images = 0;
        for (const json& msg : body["messages"]) {
            need(msg.is_object(), "each message must be an object");
            need(msg.contains("role") && msg["role"].is_string(), "each message needs a \"role\" string");
            Message mm{msg["role"].get<std::string>(), {}, {}};
            need(mm.role == "system" || mm.role == "user" || mm.role == "assistant",
                 "a message's role must be system, user or assistant, got \"" + mm.role + "\"");
            const json c = msg.contains("content") ? msg["content"] : json();
            if (c.is_string()) {
                mm.text = c.get<std::string>();
            } else {
                need(c.is_array(), "a message's \"content\" must be a string or a list of parts");
                for (const json& part : c) {
                    need(part.is_object() && part.contains("type") && part["type"].is_string(),
                         "each content part must be an object with a \"type\"");
                    const std::string type = part["type"].get<std::string>();
                    if (type == "text") {
                        need(part.contains("text") && part["text"].is_string(), "a text part needs a \"text\" string");
                        mm.text += part["text"].get<std::string>();
                    } else if (type == "image_url") {
                        const json iu = part.contains("image_url") ? part["image_url"] : json();
                        const json url = iu.is_object() && iu.contains("url") ? iu["url"] : iu;
                        need(url.is_string(), "an image_url part needs \"image_url\": {\"url\": \"data:...\"}");
                        const std::string u = url.get<std::string>();
                        need(u.rfind("http://", 0) != 0 && u.rfind("https://", 0) != 0,
                             "image URLs are not fetched: send the image as a data:image/...;base64,... URI");
                        mm.images.push_back(u);
                    } else {
                        need(false, "unknown content part type \"" + type + "\" (text or image_url)");
                    }
                }
            }
            need(mm.images.empty() || mm.role == "user", "only user messages may carry images");
            n_images += mm.images.size();
            messages.push_back(std::move(mm));
        }
        need(n_images <= kMaxImages, "a request takes at most " + std::to_string(kMaxImages) + " images");

        return [this, messages = std::move(messages), go, max_tokens](Worker& w, Exchange& ex) mutable -> ojson {
            const Model& m = *model_;
            Conversation& conv = w.conv;
            conv.reset();
            batch::TaskHooks hooks;
            hooks.max_decoded_bytes = kMaxDecoded;  // per message
            for (const Message& mm : messages) {
                if (mm.role == "system") conv.add_system(mm.text);
                else if (mm.role == "assistant") conv.add_assistant(mm.text);
                else conv.add_user(mm.text, batch::media(m, mm.images, 1, hooks));
            }
            const std::size_t prompt_tokens = m.tokenize(conv.prompt()).size();
            ex.prompt_tokens = prompt_tokens;
            const std::size_t room = m.max_positions() > prompt_tokens ? m.max_positions() - prompt_tokens : 0;
            check(room > 0, ErrorKind::Limit, "the conversation has ", prompt_tokens,
                  " tokens, the model's whole context of ", m.max_positions());
            check(!max_tokens || *max_tokens <= room, ErrorKind::Limit, "the conversation has ", prompt_tokens,
                  " tokens; with \"max_tokens\" ", max_tokens.value_or(0), " it exceeds the model's context of ",
                  m.max_positions());
            go.max_new_tokens = max_tokens.value_or(std::min<std::size_t>(room, 256));
            const std::string id = "chatcmpl-" + std::to_string(++ids_);
            const long long created =
                std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                    .count();
            auto chunk = [&](ojson delta, ojson finish) {
                return event({{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", name_},
                              {"choices", ojson::array({{{"index", 0}, {"delta", std::move(delta)},
                                                         {"finish_reason", std::move(finish)}}})}});
            };
            std::vector<std::int32_t> stops = go.stop_tokens;
            for (const std::string& s : conv.chat_template().stop) stops.push_back(m.tokenizer().encode(s, false)[0]);
            Pieces pieces(m, stops, true);
            go.on_token = [&](std::int32_t t) {  // streamed or not: a client gone stops the generation
                if (ex.cancelled) throw Cancelled{};
                if (ex.stream)
                    if (auto p = pieces.add(t); !p.empty()) ex.push(chunk({{"content", p}}, nullptr));
            };
            go.on_step = [&] {
                if (ex.cancelled) throw Cancelled{};
            };
            if (ex.stream) ex.push(chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
            const Generation g = conv.reply(go);
            const std::string text = conv.messages().back().content;
            const char* finish = g.stopped ? "stop" : "length";
            ex.completion_tokens = g.tokens.size();
            if (ex.stream) {
                if (auto p = pieces.rest(text); !p.empty()) ex.push(chunk({{"content", p}}, nullptr));
                ex.push(chunk(ojson::object(), finish));
                ex.push("data: [DONE]\n\n");
            }
            return {{"id", id},
                    {"object", "chat.completion"},
                    {"created", created},
                    {"model", name_},
                    {"choices", ojson::array({{{"index", 0},
                                               {"message", {{"role", "assistant"}, {"content", text}}},
                                               {"finish_reason", finish}}})},
                    {"usage", {{"prompt_tokens", prompt_tokens},
                               {"completion_tokens", g.tokens.size()},
                               {"total_tokens", prompt_tokens + g.tokens.size()}}}};
        };
    }

    std::shared_ptr<const Model> model_;
    Options o_;
    Pool pool_;
    std::string name_;
    Metrics metrics_;
    // cpp-httplib listens with a backlog of 5: a burst of clients past it has connections dropped
    // and retried by TCP for seconds, past the read timeout. Listening again takes a longer one.
    struct Http : httplib::Server {
        void backlog(int n) const { ::listen(svr_sock_, n); }
    };
    Http http_;
    std::atomic<std::uint64_t> ids_{0};
};

}  // namespace

int run(const std::shared_ptr<const Model>& model, const Options& o) {
    check(o.parallel >= 1, "--parallel must be at least 1");
    // SIGINT and SIGTERM are taken by one thread, which stops the server;
    // every other thread (started after this) has them blocked.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);  // a client gone mid-answer is a failed write, not the end of the server

    Server server(model, o);
    std::atomic<bool> over{false};
    std::thread waiter([&] {
        int sig = 0;
        sigwait(&signals, &sig);
        if (!over) std::cerr << "flamingo: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ", shutting down\n";
        server.stop();
    });
    int status = 1;
    try {
        status = server.listen();
    } catch (...) {
        over = true;
        pthread_kill(waiter.native_handle(), SIGTERM);
        waiter.join();
        throw;
    }
    over = true;
    pthread_kill(waiter.native_handle(), SIGTERM);  // wakes the waiter when the server ended otherwise
    waiter.join();
    return status;
}

}  // namespace flamingo::serve
