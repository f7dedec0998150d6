// Shared declarations of the PJRT addon: padded args structs, function-slot checks, errors, handles, helpers.
#pragma once

#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif

#include <node_api.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "pjrt_c_api.h"  // from the xla-cpu-pjrt wheel (PJRT C API 0.81), found through -I at build time

namespace tessera {

// ---------------------------------------------------------------------------------------------
// Version skew. The header is 0.81; plugins may be newer (the CUDA plugin and lammps-jax-pjrt-cpu
// are 0.115). A plugin rejects an args struct whose struct_size is smaller than its own
// <Struct>_STRUCT_SIZE, and only logs when it is larger. So every args struct is allocated in a
// zeroed block of sizeof(T) + kArgsPadding bytes and struct_size is set to the block's size: to any
// plugin up to kArgsPadding bytes of growth newer, we look like a newer caller whose extra fields
// are all zero (NULL, 0, false), which in the C API always means "absent". Arrays of structs
// (PJRT_NamedValue lists) cannot be padded: their stride must be the plugin's, so they keep the
// header's exact size.
// ---------------------------------------------------------------------------------------------
constexpr size_t kArgsPadding = 512;

template <typename T>
struct Args {
  T a;
  unsigned char padding[kArgsPadding];
  Args() {
    std::memset(static_cast<void*>(this), 0, sizeof(*this));
    a.struct_size = sizeof(*this);
  }
  T* operator->() { return &a; }
  T* get() { return &a; }
};

// A function slot exists in this plugin's PJRT_Api only if it lies inside api->struct_size and is
// non-NULL. Slots past the plugin's struct_size are garbage (or out of bounds), never call them.
#define TESSERA_HAS(api, fn) \
  (offsetof(PJRT_Api, fn) + sizeof(void*) <= (api)->struct_size && (api)->fn != nullptr)

// ---------------------------------------------------------------------------------------------
// Errors: a PJRT_Error (or a failure of ours) is captured as plain data on any thread and turned
// into a JS Error on the main thread: message "<op>: <XLA message>", properties code (the status
// name, e.g. "INVALID_ARGUMENT"), pjrtCode (number), pjrtOp, pjrtMessage. A bad argument from JS
// is a TypeError with code "TESSERA_NATIVE".
// ---------------------------------------------------------------------------------------------
struct Failure {
  bool failed = false;
  bool type_error = false;  // a JS argument of the wrong type or range: thrown as a TypeError
  int code = -1;  // PJRT_Error_Code, -1 when the failure is ours and not the plugin's
  std::string op;
  std::string message;
};

Failure TakeError(const PJRT_Api* api, PJRT_Error* error, const char* op);  // destroys `error`
Failure OurFailure(const char* op, std::string message);
napi_value ErrorValue(napi_env env, const Failure& f);
void ThrowFailure(napi_env env, const Failure& f);
void ThrowMessage(napi_env env, const char* op, const std::string& message);
void ThrowTypeError(napi_env env, const char* op, const std::string& message);

// Calls api->fn(args) after the slot check; on error fills `failure` and returns false.
#define TESSERA_CALL(api, fn, args, failure)                                                 \
  ([&]() -> bool {                                                                           \
    if (!TESSERA_HAS(api, fn)) {                                                             \
      failure = OurFailure(#fn, "this PJRT plugin does not provide " #fn                     \
                                " (its PJRT_Api is too old or lacks the function)");         \
      return false;                                                                          \
    }                                                                                        \
    PJRT_Error* tessera_err = (api)->fn(args);                                               \
    if (tessera_err != nullptr) {                                                            \
      failure = TakeError(api, tessera_err, #fn);                                            \
      return false;                                                                          \
    }                                                                                        \
    return true;                                                                             \
  }())

// ---------------------------------------------------------------------------------------------
// Ownership of PJRT objects, as XLA's pjrt_c_api_helpers.cc does it: a unique_ptr whose deleter
// holds the PJRT_Api and calls the matching PJRT_*_Destroy, so that every path, error paths
// included, frees what it got. Own(api, p) makes one; an empty one deletes nothing.
// ---------------------------------------------------------------------------------------------
void DestroyPjrt(const PJRT_Api* api, PJRT_Error* p);
void DestroyPjrt(const PJRT_Api* api, PJRT_Event* p);
void DestroyPjrt(const PJRT_Api* api, PJRT_Buffer* p);
void DestroyPjrt(const PJRT_Api* api, PJRT_Executable* p);
void DestroyPjrt(const PJRT_Api* api, PJRT_LoadedExecutable* p);
void DestroyPjrt(const PJRT_Api* api, PJRT_Client* p);

template <typename T>
struct PjrtDeleter {
  const PJRT_Api* api = nullptr;
  void operator()(T* p) const { DestroyPjrt(api, p); }
};
template <typename T>
using PjrtPtr = std::unique_ptr<T, PjrtDeleter<T>>;
template <typename T>
PjrtPtr<T> Own(const PJRT_Api* api, T* p) {
  return PjrtPtr<T>(p, PjrtDeleter<T>{api});
}

// PJRT_Executable_Serialize hands back its bytes with their own deleter function (which may be absent).
struct SerializedDeleter {
  void (*fn)(PJRT_SerializedExecutable*) = nullptr;
  void operator()(PJRT_SerializedExecutable* p) const {
    if (fn != nullptr) fn(p);
  }
};
using SerializedPtr = std::unique_ptr<PJRT_SerializedExecutable, SerializedDeleter>;

// ---------------------------------------------------------------------------------------------
// Handles: napi externals over structs that start with a magic word, checked on every unwrap, so
// that a wrong or stale handle is an error rather than a crash. (Cheaper than napi type tags,
// which cost a private-property write per object: execute creates one per output.)
// ---------------------------------------------------------------------------------------------
enum class Tag : uint64_t { kPlugin = 1, kClient, kBuffer, kExecutable };
constexpr uint64_t kHandleMagic = 0x7465737365726100ull;  // "tessera\0"

struct Handle {
  explicit Handle(Tag t) : magic(kHandleMagic | static_cast<uint64_t>(t)) {}
  ~Handle() { magic = 0; }
  uint64_t magic;
};

struct Plugin : Handle {
  static constexpr Tag kTag = Tag::kPlugin;
  static constexpr const char* kWhat = "plugin";
  Plugin(std::string p, void* d, const PJRT_Api* a) : Handle(kTag), path(std::move(p)), dl(d), api(a) {}
  std::string path;
  void* dl;  // never dlclose'd: unloading tears down XLA's static registries
  const PJRT_Api* api;
};

struct Dispatcher;  // executables.cc: the client's own thread for executions that may block

struct Client : Handle {
  static constexpr Tag kTag = Tag::kClient;
  static constexpr const char* kWhat = "client";
  Client(const PJRT_Api* a, PJRT_Client* c) : Handle(kTag), api(a), client(Own(a, c)) {}
  const PJRT_Api* api;
  PjrtPtr<PJRT_Client> client;  // destroyed only if creation fails half-way: clients live for the process
  std::vector<PJRT_Device*> devices;  // addressable devices, in the plugin's order
  // Executions launched and not yet complete on all their devices (decremented on plugin threads).
  std::atomic<int64_t> inflight{0};
  Dispatcher* dispatcher = nullptr;  // created on first use, lives with the client
  std::mutex retired_mu;
  std::vector<PjrtPtr<PJRT_Event>> retired;  // fired completion events, destroyed later on the main thread
};

// A PJRT object that a JS handle owns: counted in `count` while it exists, destroyed by an explicit
// dispose or by the handle's finalizer, whichever comes first. `external_bytes` is reported to V8
// as external memory while alive, so that sizable device memory makes GC run.
template <typename P, Tag kTagValue>
struct Live : Handle {
  static constexpr Tag kTag = kTagValue;
  static inline std::atomic<int64_t> count{0};

  Live(const PJRT_Api* a, P* p) : Handle(kTag), api(a), ptr(Own(a, p)) {
    if (ptr) count.fetch_add(1);
  }
  ~Live() { Destroy(nullptr); }
  bool alive() const { return ptr != nullptr; }

  // Idempotent. env is nullptr in a finalizer during teardown (then V8 is not told).
  void Destroy(napi_env env) {
    if (!ptr) return;
    ptr.reset();
    count.fetch_sub(1);
    if (external_bytes > 0 && env != nullptr) {
      int64_t now = 0;
      napi_adjust_external_memory(env, -external_bytes, &now);  // unchecked: may run in a finalizer, which must not throw
    }
    external_bytes = 0;
  }

  const PJRT_Api* api;
  PjrtPtr<P> ptr;  // empty once destroyed
  int64_t external_bytes = 0;
};

struct Buffer : Live<PJRT_Buffer, Tag::kBuffer> {
  static constexpr const char* kWhat = "buffer";
  using Live::Live;
};

struct Executable : Live<PJRT_LoadedExecutable, Tag::kExecutable> {
  static constexpr const char* kWhat = "executable";
  Executable(Client* c, PJRT_LoadedExecutable* e) : Live(c->api, e), client(c) {}
  Client* client;
  size_t num_outputs = 0;
  std::vector<PJRT_Device*> devices;     // addressable devices of the executable, in execution order
  std::vector<int64_t> output_bytes;     // per output, for external-memory accounting
};

// Wraps `obj` in a napi external; for Buffer and Executable the handle owns it (freed by its finalizer).
napi_value WrapPlugin(napi_env env, Plugin* p);
napi_value WrapClient(napi_env env, Client* c);
napi_value WrapBuffer(napi_env env, Buffer* b);  // reports b->external_bytes if sizable
napi_value WrapExecutable(napi_env env, Executable* e);

// The handle's object, or nullptr with a TypeError thrown naming `op` and the argument `name`.
void* UnwrapHandle(napi_env env, napi_value v, Tag tag, const char* what, const char* op, const std::string& name);
template <typename T>
T* Unwrap(napi_env env, napi_value v, const char* op, const std::string& name) {
  return static_cast<T*>(UnwrapHandle(env, v, T::kTag, T::kWhat, op, name));
}
// As Unwrap, and the PJRT object must not have been destroyed yet.
template <typename T>
T* UnwrapLive(napi_env env, napi_value v, const char* op, const std::string& name) {
  T* obj = Unwrap<T>(env, v, op, name);
  if (obj != nullptr && !obj->alive()) {
    ThrowMessage(env, op, std::string(T::kWhat) + " has been disposed");
    return nullptr;
  }
  return obj;
}

// Host arrays referenced because a transfer from them may still be running.
extern std::atomic<int64_t> g_host_holds;

// ---------------------------------------------------------------------------------------------
// Back to the main thread: one threadsafe function per env carries MainTasks posted from plugin
// threads and the dispatcher. A task that settles a promise holds the event loop open until then.
// ---------------------------------------------------------------------------------------------
struct MainTask {
  virtual ~MainTask() = default;
  virtual void OnMain(napi_env env) = 0;  // env is nullptr when the env is being torn down
  napi_threadsafe_function tsfn = nullptr;
  bool holds_loop = false;
};

void HoldLoop(napi_env env, MainTask* task);  // sets task->tsfn; holds the loop if task->holds_loop
void ReleaseLoop(napi_env env);               // call once from OnMain of a task that held the loop
void PostToMain(MainTask* task);              // any thread; the task is deleted after OnMain

// PJRT_Event_OnReady runs a callback on a plugin thread; the wait is settled on the main thread.
struct EventWait : MainTask {
  const PJRT_Api* api = nullptr;
  PjrtPtr<PJRT_Event> event;  // destroyed on the main thread once it has fired
  const char* op = "";
  napi_deferred deferred = nullptr;  // settled when the event fires (nullptr: release only)
  napi_ref keep = nullptr;           // JS memory kept alive until the event fires
  bool host_hold = false;            // `keep` is an uploaded host array (counted in g_host_holds)
  Failure failure;
  void OnMain(napi_env env) override;
};

// Takes ownership of `wait` (and so of its event). On a failure to register, settles or releases at once.
void WaitForEvent(napi_env env, EventWait* wait);

// ---------------------------------------------------------------------------------------------
// Async jobs on libuv's worker pool: Run() on a worker thread (no JS), Finish() on the main thread.
// What a job holds is freed by its destructor, on the main thread, whether it succeeded or not.
// ---------------------------------------------------------------------------------------------
class Job {
 public:
  virtual ~Job() = default;
  virtual void Run() = 0;                       // worker thread
  virtual napi_value Finish(napi_env env) = 0;  // main thread, only if !failure.failed
  Failure failure;
};

// Queues `job` and returns a promise settled with Finish()'s value or the failure.
napi_value StartJob(napi_env env, std::unique_ptr<Job> job, const char* name);

// ---------------------------------------------------------------------------------------------
// Small napi helpers.
// ---------------------------------------------------------------------------------------------
// Every N-API status is checked: on failure this throws a JS Error naming the call (unless an
// exception is already pending) and returns false. Values the call would have set stay nullptr,
// which later N-API calls refuse without crashing, so builders may carry on and return.
bool NapiOk(napi_env env, napi_status status, const char* call);
#define NAPI_CHECK(env, call) ::tessera::NapiOk(env, (call), #call)

// Conversions of JS values. On a wrong type or range each throws a TypeError
// "<op>: <name> must be <expected>, got <value>" and returns false.
bool ToString(napi_env env, napi_value v, const char* op, const std::string& name, std::string* out);
// A number that is an integer in [-2^63, 2^63) (NaN, ±Infinity, fractions and 2^63 are refused), or a BigInt.
bool ToInt64(napi_env env, napi_value v, const char* op, const std::string& name, int64_t* out);
bool ToDouble(napi_env env, napi_value v, const char* op, const std::string& name, double* out);
bool ToBool(napi_env env, napi_value v, const char* op, const std::string& name, bool* out);
bool ToArrayLength(napi_env env, napi_value v, const char* op, const std::string& name, uint32_t* length);
bool ToInt64Array(napi_env env, napi_value v, const char* op, const std::string& name, std::vector<int64_t>* out);
// Any TypedArray: its data pointer and size in bytes (the memory stays JS's).
bool ToTypedArray(napi_env env, napi_value v, const char* op, const std::string& name, void** data, size_t* bytes);
bool ToBytes(napi_env env, napi_value v, const char* op, const std::string& name, std::string* out);  // Uint8Array copy
// An integer in [0, size), e.g. a device index.
bool ToIndex(napi_env env, napi_value v, const char* op, const std::string& name, size_t size, size_t* out);

// The arguments of one call from JS, with typed getters whose errors name the function and the
// argument. Missing arguments read as undefined (and so fail their getter).
class JsArgs {
 public:
  static constexpr size_t kMax = 6;  // the most any addon function takes
  JsArgs(napi_env env, napi_callback_info info, const char* op) : env_(env), op_(op) {
    size_t argc = kMax;
    ok_ = NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv_, nullptr, nullptr));
  }
  bool ok() const { return ok_; }
  const char* op() const { return op_; }
  napi_value operator[](size_t i) const { return argv_[i]; }

  bool String(size_t i, const char* name, std::string* out) const { return ok_ && ToString(env_, argv_[i], op_, name, out); }
  bool Int64(size_t i, const char* name, int64_t* out) const { return ok_ && ToInt64(env_, argv_[i], op_, name, out); }
  bool Bool(size_t i, const char* name, bool* out) const { return ok_ && ToBool(env_, argv_[i], op_, name, out); }
  bool Int64Array(size_t i, const char* name, std::vector<int64_t>* out) const {
    return ok_ && ToInt64Array(env_, argv_[i], op_, name, out);
  }
  bool TypedArray(size_t i, const char* name, void** data, size_t* bytes) const {
    return ok_ && ToTypedArray(env_, argv_[i], op_, name, data, bytes);
  }
  bool Bytes(size_t i, const char* name, std::string* out) const { return ok_ && ToBytes(env_, argv_[i], op_, name, out); }
  bool Index(size_t i, const char* name, size_t size, size_t* out) const {
    return ok_ && ToIndex(env_, argv_[i], op_, name, size, out);
  }
  template <typename T>
  T* Get(size_t i, const char* name) const {
    return ok_ ? Unwrap<T>(env_, argv_[i], op_, name) : nullptr;
  }
  template <typename T>
  T* GetLive(size_t i, const char* name) const {
    return ok_ ? UnwrapLive<T>(env_, argv_[i], op_, name) : nullptr;
  }

 private:
  napi_env env_;
  const char* op_;
  napi_value argv_[kMax] = {};
  bool ok_ = false;
};

bool IsNullish(napi_env env, napi_value v);
// Builders: nullptr (with a JS error thrown) when N-API fails.
napi_value MakeInt64(napi_env env, int64_t v);
napi_value MakeDouble(napi_env env, double v);
napi_value MakeBool(napi_env env, bool v);
napi_value MakeString(napi_env env, const char* s, size_t n);
napi_value MakeBytes(napi_env env, const char* data, size_t n);  // Uint8Array copy
napi_value MakeObject(napi_env env);
napi_value MakeArray(napi_env env, size_t length);
napi_value Undefined(napi_env env);
napi_value Null(napi_env env);
void SetProp(napi_env env, napi_value obj, const char* name, napi_value v);
void SetElement(napi_env env, napi_value array, size_t i, napi_value v);

// Registration of the functions of each file.
void RegisterClientFunctions(napi_env env, napi_value exports);
void RegisterBufferFunctions(napi_env env, napi_value exports);
void RegisterExecutableFunctions(napi_env env, napi_value exports);
void RegisterCpuGemmFunctions(napi_env env, napi_value exports);
void RegisterHostAllocFunctions(napi_env env, napi_value exports);
void AddFunction(napi_env env, napi_value exports, const char* name, napi_callback cb);

}  // namespace tessera
