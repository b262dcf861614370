// SentencePiece models for text towers that use them.
//
// libsentencepiece is opened at run time with dlopen(RTLD_LOCAL | RTLD_DEEPBIND) instead of
// being linked. Debian's libsentencepiece.so.0 carries its own protobuf-lite 3.14 and exports its
// symbols; linked next to libtorch (which pulls in libprotobuf 3.21) the two copies interpose on
// each other and every program crashes in a static initialiser before main(). Loaded locally and
// deep-bound, sentencepiece keeps to its own copy and nothing else sees it.
//
// The C++ API is used through the header's class layout: the constructor and the two util::Status
// members that are not inline are looked up with dlsym; everything else is a virtual call, which
// goes through the library's own vtable.
#include <dlfcn.h>
#include <sentencepiece_processor.h>

#include <filesystem>
#include <new>

#include "common/log.hpp"
#include "ovseg/ovseg.hpp"
#include "ovseg/tokenizer.hpp"
#include "text/text_util.hpp"

namespace ovseg {
namespace {

using sentencepiece::SentencePieceProcessor;
using sentencepiece::util::Status;

struct SentencePieceLib {
  void* handle = nullptr;
  void (*construct)(void*) = nullptr;                   // SentencePieceProcessor::SentencePieceProcessor()
  void (*destroy_status)(void*) = nullptr;              // util::Status::~Status()
  const char* (*status_message)(const void*) = nullptr; // util::Status::error_message() const
  std::string error;
};

const SentencePieceLib& sentencepiece_lib() {
  static const SentencePieceLib lib = [] {
    SentencePieceLib l;
#if defined(_GLIBCXX_USE_CXX11_ABI) && _GLIBCXX_USE_CXX11_ABI == 0
    // A build against a pre-C++11-ABI libtorch compiles this file with the old std::string,
    // while the distribution's libsentencepiece passes the C++11 one through the virtual calls
    // below: the symbols still resolve, but every string argument would be misread. Refuse.
    l.error = "this ovseg is built with the pre-C++11 libstdc++ ABI (_GLIBCXX_USE_CXX11_ABI=0, from its "
              "libtorch), the system libsentencepiece with the C++11 ABI; rebuild ovseg against the cxx11-ABI libtorch";
    return l;
#endif
    for (const char* name : {"libsentencepiece.so.0", "libsentencepiece.so"}) {
#if defined(OVSEG_SANITIZE)
      // ASan refuses RTLD_DEEPBIND. Local binding alone keeps sentencepiece's symbols out of the
      // global scope, but its own references may then bind to an already-loaded libprotobuf
      // (torch's): the sanitizer build runs SentencePiece only in processes without torch.
      l.handle = ::dlopen(name, RTLD_NOW | RTLD_LOCAL);
#else
      l.handle = ::dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
#endif
      if (l.handle) break;
      const char* err = ::dlerror();
      l.error = err ? err : name;
    }
    if (!l.handle) return l;
    l.construct = reinterpret_cast<void (*)(void*)>(
        ::dlsym(l.handle, "_ZN13sentencepiece22SentencePieceProcessorC1Ev"));
    l.destroy_status = reinterpret_cast<void (*)(void*)>(
        ::dlsym(l.handle, "_ZN13sentencepiece4util6StatusD1Ev"));
    l.status_message = reinterpret_cast<const char* (*)(const void*)>(
        ::dlsym(l.handle, "_ZNK13sentencepiece4util6Status13error_messageEv"));
    if (!l.construct || !l.destroy_status || !l.status_message) {
      l.error = "libsentencepiece lacks the expected C++ symbols";
      l.handle = nullptr;
    }
    return l;
  }();
  if (!lib.handle)
    throw Error(ErrorCode::kRuntime, "SentencePiece support unavailable: " + lib.error);
  return lib;
}

// A util::Status returned by value, kept in raw storage so that only the library's own
// destructor runs on it (no copy, no link-time reference).
class StatusHolder {
 public:
  // `path` and `what` name the call for the message of a C++ exception thrown by the library.
  template <typename F>
  StatusHolder(const std::string& path, const char* what, F&& call) {
    try {
      status_ = new (storage_) Status(call());  // guaranteed elision: constructed in place
    } catch (const std::exception& e) {
      throw Error(ErrorCode::kRuntime,
                  path + ": " + what + " failed inside libsentencepiece (" + e.what() + ")");
    }
  }
  ~StatusHolder() { sentencepiece_lib().destroy_status(status_); }
  StatusHolder(const StatusHolder&) = delete;
  StatusHolder& operator=(const StatusHolder&) = delete;
  bool ok() const { return status_->ok(); }
  std::string message() const {
    const char* m = sentencepiece_lib().status_message(status_);
    return m ? m : "unknown error";
  }

 private:
  alignas(Status) unsigned char storage_[sizeof(Status)];
  Status* status_ = nullptr;
};

}  // namespace

struct SentencePieceTokenizer::Impl {
  std::string path;
  SentencePieceProcessor* sp = nullptr;  // Encode/Decode are const and thread-safe
  std::int32_t pieces = 0, bos = -1, eos = -1, pad = -1;

  Impl() {
    const auto& lib = sentencepiece_lib();
    void* mem = ::operator new(sizeof(SentencePieceProcessor),
                               std::align_val_t(alignof(SentencePieceProcessor)));
    try {
      lib.construct(mem);
    } catch (...) {
      ::operator delete(mem, std::align_val_t(alignof(SentencePieceProcessor)));
      throw;
    }
    sp = std::launder(static_cast<SentencePieceProcessor*>(mem));
  }
  ~Impl() {
    if (!sp) return;
    sp->~SentencePieceProcessor();  // virtual: the library's destructor
    ::operator delete(static_cast<void*>(sp), std::align_val_t(alignof(SentencePieceProcessor)));
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
};

SentencePieceTokenizer::SentencePieceTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_file(const std::string& model_path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_path, ec))
    throw Error(ErrorCode::kIo, model_path + ": cannot open SentencePiece model (no such file)");
  auto impl = std::make_unique<Impl>();
  impl->path = model_path;
  SentencePieceProcessor* sp = impl->sp;
  const StatusHolder status(model_path, "loading the model",
                            [&] { return sp->Load(absl::string_view(model_path)); });
  if (!status.ok())
    throw Error(ErrorCode::kBadModel,
                model_path + ": not a valid SentencePiece model (" + status.message() + ")");
  impl->pieces = sp->GetPieceSize();
  impl->bos = sp->bos_id();
  impl->eos = sp->eos_id();
  impl->pad = sp->pad_id();
  detail::log().debug("sentencepiece tokenizer: {} pieces, bos {}, eos {} ({})", impl->pieces,
                      impl->bos, impl->eos, model_path);
  return std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(impl)));
}

std::vector<std::int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  // SentencePiece would silently replace invalid bytes; reject them like the CLIP tokenizer.
  std::u32string cps;
  std::size_t bad = 0;
  if (!detail::utf8_to_u32(text, cps, &bad))
    throw Error(ErrorCode::kInvalidArgument, "invalid UTF-8 at byte " + std::to_string(bad) +
                                                 " of text \"" + detail::text_preview(text) + "\"");
  std::vector<int> ids;
  const SentencePieceProcessor* sp = impl_->sp;
  const StatusHolder status(impl_->path, "encoding", [&] {
    return sp->Encode(absl::string_view(text.data(), text.size()), &ids);
  });
  if (!status.ok())
    throw Error(ErrorCode::kRuntime, impl_->path + ": encoding failed (" + status.message() + ")");
  return std::vector<std::int32_t>(ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::vector<int> keep;
  keep.reserve(ids.size());
  for (const std::int32_t id : ids) {
    if (id < 0 || id >= impl_->pieces)
      throw Error(ErrorCode::kInvalidArgument, "token id " + std::to_string(id) +
                                                   " is outside the vocabulary [0, " +
                                                   std::to_string(impl_->pieces) + ") of " + impl_->path);
    if (id == impl_->bos || id == impl_->eos || id == impl_->pad) continue;
    keep.push_back(id);
  }
  std::string out;
  const SentencePieceProcessor* sp = impl_->sp;
  const StatusHolder status(impl_->path, "decoding", [&] { return sp->Decode(keep, &out); });
  if (!status.ok())
    throw Error(ErrorCode::kRuntime, impl_->path + ": decoding failed (" + status.message() + ")");
  return out;
}

std::int32_t SentencePieceTokenizer::sot() const { return impl_->bos; }
std::int32_t SentencePieceTokenizer::eot() const { return impl_->eos; }
std::int32_t SentencePieceTokenizer::vocab_size() const { return impl_->pieces; }

}  // namespace ovseg
