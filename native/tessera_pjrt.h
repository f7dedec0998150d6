// Shared declarations of the PJRT addon: padded args structs, function-slot checks, errors, handles, helpers.
#pragma once

#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif

#include <node_api.h>

#include <atomic>
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
// name, e.g. "INVALID_ARGUMENT"), pjrtCode (number), pjrtOp, pjrtMessage.
// ---------------------------------------------------------------------------------------------
struct Failure {
  bool failed = false;
  int code = -1;  // PJRT_Error_Code, -1 when the failure is ours and not the plugin's
  std::string op;
  std::string message;
};

Failure TakeError(const PJRT_Api* api, PJRT_Error* error, const char* op);  // destroys `error`
Failure OurFailure(const char* op, std::string message);
napi_value ErrorValue(napi_env env, const Failure& f);
void ThrowFailure(napi_env env, const Failure& f);
void ThrowMessage(napi_env env, const char* op, const std::string& message);

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
  Plugin(std::string p, void* d, const PJRT_Api* a) : Handle(Tag::kPlugin), path(std::move(p)), dl(d), api(a) {}
  std::string path;
  void* dl;  // never dlclose'd: unloading tears down XLA's static registries
  const PJRT_Api* api;
};

struct Dispatcher;  // executables.cc: the client's own thread for executions that may block

struct Client : Handle {
  Client(const PJRT_Api* a, PJRT_Client* c) : Handle(Tag::kClient), api(a), client(c) {}
  const PJRT_Api* api;
  PJRT_Client* client;
  std::vector<PJRT_Device*> devices;  // addressable devices, in the plugin's order
  // Executions launched and not yet complete on all their devices (decremented on plugin threads).
  std::atomic<int64_t> inflight{0};
  Dispatcher* dispatcher = nullptr;  // created on first use, lives with the client
  std::mutex retired_mu;
  std::vector<PJRT_Event*> retired;  // fired completion events, destroyed later on the main thread
};

struct Buffer : Handle {
  Buffer(const PJRT_Api* a, PJRT_Buffer* b, int64_t n) : Handle(Tag::kBuffer), api(a), buffer(b), bytes(n) {}
  const PJRT_Api* api;
  PJRT_Buffer* buffer;  // nullptr once destroyed
  int64_t bytes;        // reported to V8 as external memory while alive (0: not reported)
};

struct Executable : Handle {
  Executable() : Handle(Tag::kExecutable) {}
  const PJRT_Api* api = nullptr;
  Client* client = nullptr;
  PJRT_LoadedExecutable* exe = nullptr;  // nullptr once destroyed
  size_t num_outputs = 0;
  std::vector<PJRT_Device*> devices;     // addressable devices of the executable, in execution order
  std::vector<int64_t> output_bytes;     // per output, for external-memory accounting
};

napi_value WrapPlugin(napi_env env, Plugin* p);
napi_value WrapClient(napi_env env, Client* c);
napi_value WrapBuffer(napi_env env, Buffer* b);
napi_value WrapExecutable(napi_env env, Executable* e);
Plugin* UnwrapPlugin(napi_env env, napi_value v);
Client* UnwrapClient(napi_env env, napi_value v);
Buffer* UnwrapBuffer(napi_env env, napi_value v);
Executable* UnwrapExecutable(napi_env env, napi_value v);

void DestroyBuffer(Buffer* b, napi_env env);  // idempotent
void DestroyExecutable(Executable* e);          // idempotent; PJRT frees it after executions in flight

// PJRT buffers and executables created and not yet destroyed (for leak tests and debugging).
extern std::atomic<int64_t> g_live_buffers;
extern std::atomic<int64_t> g_live_executables;
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
  PJRT_Event* event = nullptr;
  const char* op = "";
  napi_deferred deferred = nullptr;  // settled when the event fires (nullptr: release only)
  napi_ref keep = nullptr;           // JS memory kept alive until the event fires
  bool host_hold = false;            // `keep` is an uploaded host array (counted in g_host_holds)
  Failure failure;
  void OnMain(napi_env env) override;
};

// Takes ownership of `wait` and of wait->event. On a failure to register, settles or releases at once.
void WaitForEvent(napi_env env, EventWait* wait);

// ---------------------------------------------------------------------------------------------
// Async jobs on libuv's worker pool: Run() on a worker thread (no JS), Finish() on the main thread.
// ---------------------------------------------------------------------------------------------
class Job {
 public:
  virtual ~Job() = default;
  virtual void Run() = 0;                            // worker thread
  virtual napi_value Finish(napi_env env) = 0;       // main thread, only if !failure.failed
  virtual void Cleanup(napi_env env) { (void)env; }  // main thread, always
  Failure failure;
};

// Queues `job` and returns a promise settled with Finish()'s value or the failure.
napi_value StartJob(napi_env env, Job* job, const char* name);

// ---------------------------------------------------------------------------------------------
// Small napi helpers.
// ---------------------------------------------------------------------------------------------
#define NAPI_OK(env, call)                                           \
  do {                                                               \
    if ((call) != napi_ok) {                                         \
      ThrowMessage(env, "napi", "N-API call failed: " #call);        \
      return nullptr;                                                \
    }                                                                \
  } while (0)

bool GetString(napi_env env, napi_value v, std::string* out);
bool GetInt64(napi_env env, napi_value v, int64_t* out);
bool GetBool(napi_env env, napi_value v, bool* out);
bool GetInt64Array(napi_env env, napi_value v, std::vector<int64_t>* out);  // Array<number>
bool IsNullish(napi_env env, napi_value v);
napi_value MakeInt64(napi_env env, int64_t v);
napi_value MakeString(napi_env env, const char* s, size_t n);
napi_value MakeBytes(napi_env env, const char* data, size_t n);  // Uint8Array copy
void SetProp(napi_env env, napi_value obj, const char* name, napi_value v);

// Registration of the functions of each file.
void RegisterClientFunctions(napi_env env, napi_value exports);
void RegisterBufferFunctions(napi_env env, napi_value exports);
void RegisterExecutableFunctions(napi_env env, napi_value exports);
void AddFunction(napi_env env, napi_value exports, const char* name, napi_callback cb);

}  // namespace tessera
