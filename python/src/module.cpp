// flamingo._flamingo: the Python binding (pybind11) of flamingo::Model,
// Context and Conversation, plus the per-line/per-record entry points that
// `flamingo batch` and `flamingo eval` use, so that a Python runner gives the
// command's answers through the same code.
//
// Threading: a Python Model owns the shared, const flamingo::Model and a pool
// of Contexts. A call leases a context (making one when all are busy), drops
// the GIL while the model computes, and returns the context to the pool, so
// many Python threads can use one Model at once. A Chat owns its own context
// (a conversation is one thread at a time; a lock enforces it).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <flamingo/chat.hpp>
#include <flamingo/flamingo.hpp>

#include "batch.hpp"
#include "eval.hpp"

namespace py = pybind11;
namespace fl = flamingo;

namespace {

PyObject* g_error = nullptr;  // flamingo.Error

// Sets flamingo.Error(message) with .kind as the pending Python exception.
void raise_error(const std::string& message, std::string_view kind) {
    py::object cls = py::reinterpret_borrow<py::object>(g_error);
    py::object e = cls(message);
    e.attr("kind") = py::str(std::string(kind));
    PyErr_SetObject(g_error, e.ptr());
}

// ---- images ----------------------------------------------------------------

// One medium as given by Python: a file (path) or decoded pixels.
struct Medium {
    std::optional<std::string> path;
    fl::Image image;
};

// NumPy uint8 [H, W, 3] (or [H, W, 4]: alpha dropped, as files are read; or
// [H, W]: grey) to an Image. Called with the GIL held.
fl::Image image_of_array(const py::array& a, std::size_t i) {
    const std::string name = "images[" + std::to_string(i) + "]";
    if (!py::isinstance<py::array_t<std::uint8_t>>(a) || a.dtype().kind() != 'u' || a.itemsize() != 1)
        fl::fail(name, ": a NumPy image must have dtype uint8, got ", std::string(py::str(a.dtype())));
    const auto nd = a.ndim();
    if (!(nd == 2 || (nd == 3 && (a.shape(2) == 3 || a.shape(2) == 4)))) {
        std::string shape;
        for (py::ssize_t d = 0; d < nd; ++d) shape += (d ? ", " : "") + std::to_string(a.shape(d));
        fl::fail(name, ": a NumPy image must be [height, width, 3] (or [h, w, 4] or [h, w]), got [", shape, "]");
    }
    const py::ssize_t h = a.shape(0), w = a.shape(1), c = nd == 3 ? a.shape(2) : 1;
    fl::check(h > 0 && w > 0, name, ": the image is empty (", h, "x", w, ")");
    const fl::ImageLimits lim;
    fl::check(w <= lim.max_width && h <= lim.max_height, fl::ErrorKind::Limit, name, ": ", w, "x", h,
              " is larger than ", lim.max_width, "x", lim.max_height);
    fl::Image im;
    im.width = int(w), im.height = int(h);
    im.rgb.resize(std::size_t(w * h * 3));
    // Strided access: any NumPy layout (slices, transposes) reads correctly.
    const auto* base = static_cast<const std::uint8_t*>(a.data());
    const py::ssize_t sy = a.strides(0), sx = a.strides(1), sc = nd == 3 ? a.strides(2) : 0;
    std::uint8_t* out = im.rgb.data();
    for (py::ssize_t y = 0; y < h; ++y)
        for (py::ssize_t x = 0; x < w; ++x)
            for (py::ssize_t k = 0; k < 3; ++k) *out++ = base[y * sy + x * sx + (c == 1 ? 0 : k) * sc];
    return im;
}

// Python images (str / os.PathLike paths, PIL images, NumPy arrays) as
// Media. Called with the GIL held; the decoding of files happens later without it.
std::vector<Medium> media_of(const py::object& images) {
    std::vector<Medium> out;
    if (images.is_none()) return out;
    if (py::isinstance<py::str>(images) || py::isinstance<py::array>(images) || !py::hasattr(images, "__iter__"))
        fl::fail("images must be a list (of paths, PIL images or NumPy arrays)");
    py::module_ os = py::module_::import("os");
    std::size_t i = 0;
    for (py::handle h : images) {
        Medium m;
        py::object o = py::reinterpret_borrow<py::object>(h);
        if (py::isinstance<py::str>(o) || py::hasattr(o, "__fspath__")) {
            py::object p = os.attr("fsdecode")(o);
            m.path = p.cast<std::string>();
            fl::check(!m.path->empty(), "images[", i, "] is an empty path");
        } else if (py::isinstance<py::array>(o)) {
            m.image = image_of_array(o.cast<py::array>(), i);
        } else if (py::hasattr(o, "convert") && py::hasattr(o, "mode") && py::hasattr(o, "size")) {
            // A PIL image: RGB as Image.open(f).convert("RGB") gives it for a file.
            py::object rgb = o.attr("convert")("RGB");
            py::array a = py::module_::import("numpy").attr("asarray")(rgb, "uint8");
            m.image = image_of_array(a, i);
        } else {
            fl::fail("images[", i, "]: expected a path (str or os.PathLike), a PIL image or a NumPy uint8 array, got ",
                     std::string(py::str(o.get_type().attr("__name__"))));
        }
        out.push_back(std::move(m));
        ++i;
    }
    return out;
}

// Media to pixels, as Model::load_media does for files (no GIL needed).
fl::Pixels pixels_of(const fl::Model& model, const std::vector<Medium>& media, std::size_t frames) {
    fl::check(frames >= 1, "frames must be at least 1");
    std::vector<std::vector<fl::Image>> decoded;
    decoded.reserve(media.size());
    for (std::size_t i = 0; i < media.size(); ++i) {
        if (media[i].path) {
            decoded.push_back(fl::load_media_frames(*media[i].path, frames, model.image_limits()));
        } else {
            fl::check(frames == 1, "images[", i, "]: a decoded image is one frame; with frames=", frames,
                      " give a video file or a directory of frames");
            decoded.push_back({media[i].image});
        }
    }
    return model.preprocess(decoded);
}

// ---- the Python Model --------------------------------------------------------

std::optional<fl::WeightType> weight_type_of(const std::optional<std::string>& w) {
    if (!w) return std::nullopt;
    if (auto t = fl::model::parse_weight_type(*w)) return t;
    fl::fail("weights must be None, \"f32\", \"bf16\", \"q8\" or \"q4\", got \"", *w, "\"");
}

struct GenerateArgs {
    std::size_t max_new_tokens = 20, num_beams = 1, no_repeat_ngram_size = 0, frames = 1;
    double length_penalty = 1.0;
    std::optional<double> temperature, top_p;
    std::optional<long long> top_k, seed;
};

// The command's option rules (examples/flamingo.cpp generate_options), with
// Python's names.
fl::generate::GenerateOptions options_of(const GenerateArgs& a) {
    fl::generate::GenerateOptions go;
    fl::check(a.max_new_tokens >= 1 && a.max_new_tokens <= (1u << 20), "max_new_tokens must be between 1 and ",
              1 << 20, ", got ", a.max_new_tokens);
    fl::check(a.num_beams >= 1 && a.num_beams <= 1024, "num_beams must be between 1 and 1024, got ", a.num_beams);
    go.max_new_tokens = a.max_new_tokens, go.num_beams = a.num_beams;
    go.length_penalty = float(a.length_penalty);
    go.no_repeat_ngram_size = a.no_repeat_ngram_size;
    const std::pair<const char*, bool> sampling[] = {{"top_k", bool(a.top_k)}, {"top_p", bool(a.top_p)},
                                                     {"seed", bool(a.seed)}};
    for (const auto& [name, given] : sampling)
        fl::check(!given || a.temperature, name, " needs temperature (without it generation is greedy)");
    if (a.temperature) {
        fl::check(*a.temperature >= 0, "temperature must not be negative, got ", *a.temperature);
        go.temperature = float(*a.temperature);
    }
    if (a.top_k) {
        fl::check(*a.top_k >= 0, "top_k must not be negative, got ", *a.top_k);
        go.top_k = std::size_t(*a.top_k);
    }
    const double p = a.top_p.value_or(1.0);
    fl::check(p > 0.0 && p <= 1.0, "top_p must be in (0, 1], got ", p);
    go.top_p = float(p);
    if (a.seed) {
        fl::check(*a.seed >= 0, "seed must not be negative, got ", *a.seed);
        go.seed = std::uint64_t(*a.seed);
    }
    fl::check(!(go.temperature && *go.temperature > 0 && go.num_beams > 1),
              "sampling (temperature) with num_beams > 1 is not supported");
    return go;
}

// A Tensor's buffer as a NumPy array that owns it (no copy).
py::array_t<float> numpy_of(fl::Tensor<float, fl::dextents<2>>&& t) {
    auto* owned = new fl::Tensor<float, fl::dextents<2>>(std::move(t));
    py::capsule free(owned, [](void* p) { delete static_cast<fl::Tensor<float, fl::dextents<2>>*>(p); });
    const std::size_t rows = owned->extent(0), cols = owned->extent(1);
    return py::array_t<float>({rows, cols}, {cols * sizeof(float), sizeof(float)}, owned->data(), free);
}

// A generation and the timings of the call that made it (the figures the
// command prints with --verbose).
struct PyGeneration : fl::Generation {
    fl::generate::Session::Stats stats;
};

PyGeneration with_stats(fl::Generation g, const fl::generate::Session::Stats& st) {
    PyGeneration out;
    static_cast<fl::Generation&>(out) = std::move(g);
    out.stats = st;
    return out;
}

class PyModel {
public:
    PyModel(const std::filesystem::path& dir, const std::optional<std::string>& weights, int threads)
        : threads_(threads > 0 ? threads : fl::Executor::hardware_threads()) {
        fl::LoadOptions lo;
        lo.weights = weight_type_of(weights);
        py::gil_scoped_release nogil;
        model_ = fl::Model::load(dir, lo);
    }

    // A context from the pool, returned to it when the lease ends.
    class Lease {
    public:
        explicit Lease(PyModel& m) : m_(m) {
            {
                std::lock_guard lock(m_.mu_);
                if (!m_.idle_.empty()) ctx_ = std::move(m_.idle_.back()), m_.idle_.pop_back();
            }
            if (!ctx_) ctx_ = std::make_unique<fl::Context>(m_.model_, fl::ContextOptions{m_.threads_, nullptr});
        }
        ~Lease() {
            std::lock_guard lock(m_.mu_);
            m_.idle_.push_back(std::move(ctx_));
        }
        fl::Context& operator*() { return *ctx_; }
        fl::Context* operator->() { return ctx_.get(); }

    private:
        PyModel& m_;
        std::unique_ptr<fl::Context> ctx_;
    };

    PyGeneration generate(const std::string& prompt, const py::object& images, const GenerateArgs& a) {
        const auto go = options_of(a);
        const auto media = media_of(images);
        py::gil_scoped_release nogil;
        Lease ctx(*this);
        ctx->session().reset_stats();
        ctx->set_media(pixels_of(*model_, media, a.frames));
        auto g = ctx->generate(prompt, go);
        return with_stats(std::move(g), ctx->stats());
    }

    py::list score(const std::string& prompt, const py::object& images, const std::vector<std::string>& candidates,
                   std::size_t frames) {
        const auto media = media_of(images);
        std::vector<fl::Scored> s;
        {
            py::gil_scoped_release nogil;
            Lease ctx(*this);
            ctx->set_media(pixels_of(*model_, media, frames));
            s = ctx->score(prompt, candidates);
        }
        py::list out;
        for (const auto& c : s) {
            py::dict d;
            d["candidate"] = c.candidate, d["logprob"] = c.score.logprob, d["mean_logprob"] = c.score.mean_logprob;
            d["tokens"] = c.score.tokens;
            out.append(d);
        }
        return out;
    }

    py::array_t<float> logits(const std::string& prompt, const py::object& images, std::size_t frames) {
        const auto media = media_of(images);
        fl::Tensor<float, fl::dextents<2>> lg;
        {
            py::gil_scoped_release nogil;
            Lease ctx(*this);
            ctx->set_media(pixels_of(*model_, media, frames));
            lg = ctx->logits(prompt);
        }
        return numpy_of(std::move(lg));
    }

    py::array_t<float> embed(const py::object& images) {
        const auto media = media_of(images);
        fl::check(!media.empty(), "embed needs at least one image");
        fl::Tensor<float, fl::dextents<2>> e;
        {
            py::gil_scoped_release nogil;
            Lease ctx(*this);
            e = ctx->embed(pixels_of(*model_, media, 1));
        }
        return numpy_of(std::move(e));
    }

    std::vector<std::int32_t> tokenize(const std::string& text) const { return model_->tokenize(text); }
    std::string decode(const std::vector<std::int32_t>& ids) const { return model_->decode(ids); }

    std::string batch_line(std::string line, const std::filesystem::path& base_dir) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        fl::check(line.find_first_not_of(" \t") != std::string::npos,
                  "the line is blank (flamingo batch skips blank lines and writes nothing for them)");
        py::gil_scoped_release nogil;
        const std::filesystem::path base = std::filesystem::absolute(base_dir);
        fl::batch::TaskHooks hooks;
        hooks.files = &base;
        const fl::batch::Item item = fl::batch::parse_line(line);
        Lease ctx(*this);
        bool failed = false;
        return fl::batch::answer_line(&*ctx, item, hooks, {}, failed);
    }

    py::dict eval_record(const std::filesystem::path& data, const std::string& record, std::size_t frames) {
        fl::fewshot::Outcome o;
        {
            py::gil_scoped_release nogil;
            nlohmann::json r;
            try {
                r = nlohmann::json::parse(record);
            } catch (const nlohmann::json::exception& e) {
                fl::fail(fl::ErrorKind::Format, "the record is not JSON: ", e.what());
            }
            Lease ctx(*this);
            o = fl::fewshot::evaluate_one(*ctx, data, r, frames);
        }
        py::dict d;
        d["id"] = o.id, d["task"] = o.task, d["shots"] = o.shots, d["correct"] = o.correct,
        d["prediction"] = o.prediction;
        return d;
    }

    const std::shared_ptr<const fl::Model>& model() const { return model_; }
    int threads() const { return threads_; }

private:
    std::shared_ptr<const fl::Model> model_;
    int threads_;
    std::mutex mu_;
    std::vector<std::unique_ptr<fl::Context>> idle_;
};

// A conversation on its own context; one call at a time.
class PyChat {
public:
    PyChat(const PyModel& m, const std::optional<std::string>& system)
        : model_(m.model()), chat_(m.model(), fl::ContextOptions{m.threads(), nullptr}) {
        if (system) chat_.add_system(*system);
    }

    PyGeneration send(const std::string& text, const py::object& images, const GenerateArgs& a) {
        const auto go = options_of(a);
        const auto media = media_of(images);
        py::gil_scoped_release nogil;
        std::lock_guard lock(mu_);
        chat_.add_user(text, pixels_of(*model_, media, 1));
        try {
            chat_.context().session().reset_stats();
            auto g = chat_.reply(go);
            return with_stats(std::move(g), chat_.stats());
        } catch (...) {
            chat_.pop();  // as `flamingo chat`: a failed turn leaves the conversation as it was
            throw;
        }
    }
    void add_system(const std::string& t) {
        std::lock_guard lock(mu_);
        chat_.add_system(t);
    }
    void add_assistant(const std::string& t) {
        std::lock_guard lock(mu_);
        chat_.add_assistant(t);
    }
    void reset() {
        py::gil_scoped_release nogil;
        std::lock_guard lock(mu_);
        chat_.reset();
    }
    std::string prompt() {
        std::lock_guard lock(mu_);
        return chat_.prompt();
    }
    py::list messages() {
        std::lock_guard lock(mu_);
        py::list out;
        for (const auto& m : chat_.messages()) {
            py::dict d;
            d["role"] = m.role, d["content"] = m.content, d["images"] = m.images;
            out.append(d);
        }
        return out;
    }

private:
    std::shared_ptr<const fl::Model> model_;
    fl::Conversation chat_;
    std::mutex mu_;
};

std::vector<std::string> eval_records(const std::filesystem::path& data, std::size_t limit) {
    std::vector<std::string> out;
    for (const auto& r : fl::fewshot::records(data, limit)) out.push_back(r.dump());
    return out;
}

std::string eval_table(const py::list& outcomes) {
    std::vector<fl::fewshot::Outcome> os;
    std::size_t i = 0;
    for (py::handle h : outcomes) {
        fl::check(py::isinstance<py::dict>(h), "outcomes[", i, "] must be a dict (as eval_record returns)");
        py::dict d = py::reinterpret_borrow<py::dict>(h);
        for (const char* k : {"task", "shots", "correct"})
            fl::check(d.contains(k), "outcomes[", i, "] has no \"", k, "\"");
        fl::fewshot::Outcome o;
        o.task = d["task"].cast<std::string>(), o.shots = d["shots"].cast<int>(), o.correct = d["correct"].cast<bool>();
        if (d.contains("id")) o.id = py::str(d["id"]);
        if (d.contains("prediction")) o.prediction = py::str(d["prediction"]);
        os.push_back(std::move(o));
        ++i;
    }
    return fl::fewshot::table(os);
}

const char* kGenerateDoc = R"(Generates a continuation of an interleaved prompt.

prompt: text with one <image> per image, e.g. "<image>A photo of".
images: one per <image>, in order: paths (str or os.PathLike), PIL images or
    NumPy uint8 arrays [H, W, 3]; with frames > 1, video files or directories
    of frames (paths only).
Greedy unless num_beams > 1 (beam search) or temperature is given (sampling;
top_k, top_p and seed apply only then). Stops at <|endofchunk|> or after
max_new_tokens. Returns a Generation (text, tokens, stopped, score).
The GIL is released while the model runs.)";

}  // namespace

PYBIND11_MODULE(_flamingo, m) {
    m.doc() = "Flamingo visual language models on the CPU (the C++ library flamingo, bound with pybind11).";

    g_error = PyErr_NewExceptionWithDoc(
        "flamingo.Error",
        "An error of the flamingo library: the message is the one the flamingo command prints;\n"
        "`kind` is its category: 'input', 'file', 'format', 'config', 'shape' or 'limit'.",
        PyExc_RuntimeError, nullptr);
    m.attr("Error") = py::handle(g_error);
    py::setattr(m.attr("Error"), "kind", py::str("input"));
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const fl::Error& e) {
            raise_error(e.what(), fl::error_kind_name(e.kind()));
        } catch (const nlohmann::json::exception& e) {
            raise_error(e.what(), "format");
        } catch (const std::bad_alloc&) {
            raise_error("out of memory", "limit");
        } catch (const std::filesystem::filesystem_error& e) {
            raise_error(e.what(), "file");
        }
    });

    py::class_<PyGeneration>(m, "Generation", "The result of Model.generate or Chat.send.")
        .def_readonly("text", &PyGeneration::text, "the continuation, without the stop token")
        .def_readonly("tokens", &PyGeneration::tokens,
                      "generated token ids, the stop token included when generation ended on it")
        .def_readonly("stopped", &PyGeneration::stopped, "True when generation ended on the stop token")
        .def_readonly("score", &PyGeneration::score, "beam search: the best hypothesis's score (else 0)")
        .def_property_readonly(
            "timings",
            [](const PyGeneration& g) {
                py::dict d;
                d["media_seconds"] = g.stats.media_seconds, d["media_encoded"] = g.stats.media_encoded;
                d["read_tokens"] = g.stats.read_tokens, d["read_seconds"] = g.stats.read_seconds;
                d["steps"] = g.stats.steps, d["step_seconds"] = g.stats.step_seconds;
                return d;
            },
            "this call's timings, as the command's --verbose prints them: media_seconds (encoding),\n"
            "media_encoded, read_tokens, read_seconds (the prompt), steps, step_seconds (decoding)")
        .def("__repr__", [](const PyGeneration& g) {
            return "Generation(text=" + std::string(py::repr(py::str(g.text))) + ", tokens=" +
                   std::to_string(g.tokens.size()) + ", stopped=" + (g.stopped ? "True" : "False") + ")";
        });

    py::class_<PyModel>(m, "Model",
                        "A loaded Flamingo model, shared by any number of Python threads.\n\n"
                        "Model(path, weights=None, threads=None): path is a model directory (config.json,\n"
                        "tokenizer.json, *.safetensors); weights None (as stored), 'f32', 'bf16', 'q8' or\n"
                        "'q4'; threads: the threads each call computes on (default: all cores). Each call\n"
                        "takes a context from a pool the Model owns and releases the GIL while it computes.")
        .def(py::init([](const py::object& path, const std::optional<std::string>& weights,
                         const std::optional<int> threads) {
                 const std::string dir = py::module_::import("os").attr("fsdecode")(path).cast<std::string>();
                 fl::check(!threads || *threads >= 1, "threads must be at least 1, got ", threads.value_or(0));
                 return std::make_unique<PyModel>(dir, weights, threads.value_or(0));
             }),
             py::arg("path"), py::arg("weights") = py::none(), py::arg("threads") = py::none())
        .def_property_readonly("threads", &PyModel::threads, "threads each call computes on")
        .def_property_readonly("vocab_size", [](const PyModel& p) { return p.model()->vocab_size(); })
        .def_property_readonly("embed_dim", [](const PyModel& p) { return p.model()->embed_dim(); })
        .def_property_readonly("max_positions", [](const PyModel& p) { return p.model()->max_positions(); })
        .def_property_readonly("weights", [](const PyModel& p) {
            return std::string(fl::model::weight_type_name(p.model()->network().weight_type()));
        }, "the format the large matrices are held in: 'f32', 'bf16', 'q8' or 'q4'")
        .def(
            "generate",
            [](PyModel& self, const std::string& prompt, const py::object& images, std::size_t max_new_tokens,
               std::size_t num_beams, double length_penalty, std::size_t no_repeat_ngram_size,
               std::optional<double> temperature, std::optional<long long> top_k, std::optional<double> top_p,
               std::optional<long long> seed, std::size_t frames) {
                GenerateArgs a;
                a.max_new_tokens = max_new_tokens, a.num_beams = num_beams, a.length_penalty = length_penalty;
                a.no_repeat_ngram_size = no_repeat_ngram_size, a.temperature = temperature, a.top_k = top_k;
                a.top_p = top_p, a.seed = seed, a.frames = frames;
                return self.generate(prompt, images, a);
            },
            kGenerateDoc, py::arg("prompt"), py::arg("images") = py::none(), py::kw_only(),
            py::arg("max_new_tokens") = 20, py::arg("num_beams") = 1, py::arg("length_penalty") = 1.0,
            py::arg("no_repeat_ngram_size") = 0, py::arg("temperature") = py::none(), py::arg("top_k") = py::none(),
            py::arg("top_p") = py::none(), py::arg("seed") = py::none(), py::arg("frames") = 1)
        .def("score", &PyModel::score,
             "Log-likelihood of each candidate continuation of the prompt (candidates are tokenized\n"
             "alone, without special tokens). Returns a list of dicts {candidate, logprob,\n"
             "mean_logprob, tokens}, as `flamingo score` prints.",
             py::arg("prompt"), py::arg("images") = py::none(), py::kw_only(), py::arg("candidates"),
             py::arg("frames") = 1)
        .def("logits", &PyModel::logits,
             "Teacher-forced logits of every prompt position: NumPy float32 [tokens, vocab]\n"
             "(the array owns the library's buffer; nothing is copied).",
             py::arg("prompt"), py::arg("images") = py::none(), py::kw_only(), py::arg("frames") = 1)
        .def("embed", &PyModel::embed, "CLIP embeddings (pooled, projected): NumPy float32 [images, dim].",
             py::arg("images"))
        .def("tokenize", &PyModel::tokenize, "Token ids of a text, as Hugging Face's tokenizer(text) gives them.",
             py::arg("text"))
        .def("decode", &PyModel::decode, "Text of token ids.", py::arg("tokens"))
        .def("chat", [](const PyModel& self, std::optional<std::string> system) { return std::make_unique<PyChat>(self, system); },
             "A new conversation (see Chat) on this model, with an optional system message.",
             py::arg("system") = py::none())
        .def("batch_line", &PyModel::batch_line,
             "The output line (without newline) `flamingo batch` writes for one input line:\n"
             "{\"id\", \"result\"} or {\"id\", \"error\"}; images are relative to base_dir.",
             py::arg("line"), py::arg("base_dir"))
        .def("eval_record", &PyModel::eval_record,
             "Evaluates one record of eval_records(data_dir): a dict {id, task, shots, correct,\n"
             "prediction}, the outcome `flamingo eval` computes for it.",
             py::arg("data_dir"), py::arg("record"), py::arg("frames") = 1);

    py::class_<PyChat>(m, "Chat",
                       "A conversation (flamingo::Conversation): messages become a prompt through the\n"
                       "model's chat template; each turn reads only its new tokens and images.\n"
                       "One call at a time (concurrent calls wait for each other).")
        .def(
            "send",
            [](PyChat& self, const std::string& text, const py::object& images, std::size_t max_new_tokens,
               std::size_t num_beams, double length_penalty, std::size_t no_repeat_ngram_size,
               std::optional<double> temperature, std::optional<long long> top_k, std::optional<double> top_p,
               std::optional<long long> seed) {
                GenerateArgs a;
                a.max_new_tokens = max_new_tokens, a.num_beams = num_beams, a.length_penalty = length_penalty;
                a.no_repeat_ngram_size = no_repeat_ngram_size, a.temperature = temperature, a.top_k = top_k;
                a.top_p = top_p, a.seed = seed;
                return self.send(text, images, a);
            },
            "Adds a user message (its images go before its text) and returns the assistant's\n"
            "reply (a Generation), which is added to the conversation. A failed turn adds nothing.",
            py::arg("text"), py::arg("images") = py::none(), py::kw_only(), py::arg("max_new_tokens") = 20,
            py::arg("num_beams") = 1, py::arg("length_penalty") = 1.0, py::arg("no_repeat_ngram_size") = 0,
            py::arg("temperature") = py::none(), py::arg("top_k") = py::none(), py::arg("top_p") = py::none(),
            py::arg("seed") = py::none())
        .def("add_system", &PyChat::add_system, "Adds a system message.", py::arg("text"))
        .def("add_assistant", &PyChat::add_assistant, "Adds an assistant message (e.g. a few-shot example).",
             py::arg("text"))
        .def("reset", &PyChat::reset, "Starts over: no messages, no images.")
        .def("prompt", &PyChat::prompt, "The whole conversation as a prompt, ending with the generation prompt.")
        .def_property_readonly("messages", &PyChat::messages, "The messages: dicts {role, content, images}.");

    m.def("eval_records", &eval_records,
          "The records `flamingo eval --data DIR --limit N` evaluates, in its order, as JSON text\n"
          "(a record without \"task\" gets its file's name there).",
          py::arg("data_dir"), py::arg("limit") = 0);
    m.def("eval_table", &eval_table, "The Markdown accuracy table `flamingo eval` prints for these outcomes.",
          py::arg("outcomes"));
}
