// Addon core: module init, PJRT errors as JS errors, checked handles, event waits, worker jobs, napi helpers.
#include "tessera_pjrt.h"

#include <cstdio>

namespace tessera {

// ------------------------------------------------------------------------------------- errors

static const char* CodeName(int code) {
  static const char* const kNames[] = {
      "OK",           "CANCELLED",         "UNKNOWN",        "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND",    "ALREADY_EXISTS",    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",      "OUT_OF_RANGE",      "UNIMPLEMENTED",  "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS",    "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) return kNames[code];
  return "UNKNOWN";
}

Failure TakeError(const PJRT_Api* api, PJRT_Error* error, const char* op) {
  Failure f;
  f.failed = true;
  f.op = op;
  f.code = PJRT_Error_Code_UNKNOWN;
  if (TESSERA_HAS(api, PJRT_Error_Message)) {
    Args<PJRT_Error_Message_Args> m;
    m->error = error;
    api->PJRT_Error_Message(m.get());
    if (m->message != nullptr) f.message.assign(m->message, m->message_size);
  }
  if (TESSERA_HAS(api, PJRT_Error_GetCode)) {
    Args<PJRT_Error_GetCode_Args> c;
    c->error = error;
    PJRT_Error* inner = api->PJRT_Error_GetCode(c.get());
    if (inner == nullptr) {
      f.code = c->code;
    } else if (TESSERA_HAS(api, PJRT_Error_Destroy)) {
      Args<PJRT_Error_Destroy_Args> d;
      d->error = inner;
      api->PJRT_Error_Destroy(d.get());
    }
  }
  if (TESSERA_HAS(api, PJRT_Error_Destroy)) {
    Args<PJRT_Error_Destroy_Args> d;
    d->error = error;
    api->PJRT_Error_Destroy(d.get());
  }
  if (f.message.empty()) f.message = "(the plugin gave no message)";
  return f;
}

Failure OurFailure(const char* op, std::string message) {
  Failure f;
  f.failed = true;
  f.op = op;
  f.message = std::move(message);
  return f;
}

napi_value ErrorValue(napi_env env, const Failure& f) {
  std::string text = f.op + ": " + f.message;
  napi_value msg, err, code;
  napi_create_string_utf8(env, text.c_str(), text.size(), &msg);
  const char* code_name = f.code >= 0 ? CodeName(f.code) : "TESSERA_NATIVE";
  napi_create_string_utf8(env, code_name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &err);
  if (f.code >= 0) SetProp(env, err, "pjrtCode", MakeInt64(env, f.code));
  SetProp(env, err, "pjrtOp", MakeString(env, f.op.data(), f.op.size()));
  SetProp(env, err, "pjrtMessage", MakeString(env, f.message.data(), f.message.size()));
  return err;
}

void ThrowFailure(napi_env env, const Failure& f) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw(env, ErrorValue(env, f));
}

void ThrowMessage(napi_env env, const char* op, const std::string& message) {
  ThrowFailure(env, OurFailure(op, message));
}

// ------------------------------------------------------------------------------------ helpers

bool GetString(napi_env env, napi_value v, std::string* out) {
  size_t n = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &n) != napi_ok) return false;
  out->resize(n + 1);
  if (napi_get_value_string_utf8(env, v, out->data(), n + 1, &n) != napi_ok) return false;
  out->resize(n);
  return true;
}

bool GetInt64(napi_env env, napi_value v, int64_t* out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t == napi_bigint) {
    bool lossless = false;
    return napi_get_value_bigint_int64(env, v, out, &lossless) == napi_ok && lossless;
  }
  if (t != napi_number) return false;
  double d = 0;
  if (napi_get_value_double(env, v, &d) != napi_ok) return false;
  if (d != static_cast<double>(static_cast<int64_t>(d))) return false;
  *out = static_cast<int64_t>(d);
  return true;
}

bool GetBool(napi_env env, napi_value v, bool* out) { return napi_get_value_bool(env, v, out) == napi_ok; }

bool GetInt64Array(napi_env env, napi_value v, std::vector<int64_t>* out) {
  bool is_array = false;
  if (napi_is_array(env, v, &is_array) != napi_ok || !is_array) return false;
  uint32_t n = 0;
  napi_get_array_length(env, v, &n);
  out->resize(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    if (napi_get_element(env, v, i, &e) != napi_ok || !GetInt64(env, e, &(*out)[i])) return false;
  }
  return true;
}

bool IsNullish(napi_env env, napi_value v) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  return t == napi_undefined || t == napi_null;
}

napi_value MakeInt64(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

napi_value MakeString(napi_env env, const char* s, size_t n) {
  napi_value r;
  napi_create_string_utf8(env, s == nullptr ? "" : s, s == nullptr ? 0 : n, &r);
  return r;
}

napi_value MakeBytes(napi_env env, const char* data, size_t n) {
  void* dst = nullptr;
  napi_value ab, arr;
  napi_create_arraybuffer(env, n, &dst, &ab);
  if (n > 0) std::memcpy(dst, data, n);
  napi_create_typedarray(env, napi_uint8_array, n, ab, 0, &arr);
  return arr;
}

void SetProp(napi_env env, napi_value obj, const char* name, napi_value v) {
  napi_set_named_property(env, obj, name, v);
}

void AddFunction(napi_env env, napi_value exports, const char* name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, nullptr, &fn);
  napi_set_named_property(env, exports, name, fn);
}

// ------------------------------------------------------------------------------------ handles

static napi_value MakeHandle(napi_env env, Handle* data, napi_finalize fin) {
  napi_value ext;
  if (napi_create_external(env, data, fin, nullptr, &ext) != napi_ok) return nullptr;
  return ext;
}

static void* GetHandle(napi_env env, napi_value v, Tag tag, const char* what) {
  napi_valuetype type;
  void* data = nullptr;
  if (napi_typeof(env, v, &type) == napi_ok && type == napi_external) napi_get_value_external(env, v, &data);
  if (data == nullptr || static_cast<Handle*>(data)->magic != (kHandleMagic | static_cast<uint64_t>(tag))) {
    ThrowMessage(env, "tessera", std::string("expected a native ") + what + " handle");
    return nullptr;
  }
  return data;
}

static void FinalizeBuffer(napi_env env, void* data, void*) {
  auto* b = static_cast<Buffer*>(data);
  DestroyBuffer(b, env);
  delete b;
}

std::atomic<int64_t> g_live_buffers{0};
std::atomic<int64_t> g_live_executables{0};
std::atomic<int64_t> g_host_holds{0};

static void FinalizeExecutable(napi_env, void* data, void*) {
  auto* e = static_cast<Executable*>(data);
  DestroyExecutable(e);
  delete e;
}

void DestroyExecutable(Executable* e) {
  if (e->exe == nullptr) return;
  if (TESSERA_HAS(e->api, PJRT_LoadedExecutable_Destroy)) {
    Args<PJRT_LoadedExecutable_Destroy_Args> a;
    a->executable = e->exe;
    PJRT_Error* err = e->api->PJRT_LoadedExecutable_Destroy(a.get());
    if (err != nullptr) TakeError(e->api, err, "PJRT_LoadedExecutable_Destroy");
  }
  e->exe = nullptr;
  g_live_executables.fetch_sub(1);
}

void DestroyBuffer(Buffer* b, napi_env env) {
  if (b->buffer == nullptr) return;
  g_live_buffers.fetch_sub(1);
  if (TESSERA_HAS(b->api, PJRT_Buffer_Destroy)) {
    Args<PJRT_Buffer_Destroy_Args> a;
    a->buffer = b->buffer;
    PJRT_Error* err = b->api->PJRT_Buffer_Destroy(a.get());
    if (err != nullptr) TakeError(b->api, err, "PJRT_Buffer_Destroy");
  }
  b->buffer = nullptr;
  if (b->bytes > 0 && env != nullptr) {
    int64_t now = 0;
    napi_adjust_external_memory(env, -b->bytes, &now);
  }
  b->bytes = 0;
}

napi_value WrapPlugin(napi_env env, Plugin* p) { return MakeHandle(env, p, nullptr); }
napi_value WrapClient(napi_env env, Client* c) { return MakeHandle(env, c, nullptr); }
napi_value WrapBuffer(napi_env env, Buffer* b) {
  if (b->buffer != nullptr) g_live_buffers.fetch_add(1);
  // Only sizable buffers are worth telling V8 about (it is what makes GC run under memory pressure);
  // skipping small ones saves two V8 calls per execution output.
  constexpr int64_t kMinReportedBytes = 64 << 10;
  if (b->bytes < kMinReportedBytes) b->bytes = 0;
  if (b->bytes > 0) {
    int64_t now = 0;
    napi_adjust_external_memory(env, b->bytes, &now);
  }
  return MakeHandle(env, b, FinalizeBuffer);
}
napi_value WrapExecutable(napi_env env, Executable* e) {
  if (e->exe != nullptr) g_live_executables.fetch_add(1);
  return MakeHandle(env, e, FinalizeExecutable);
}
Plugin* UnwrapPlugin(napi_env env, napi_value v) {
  return static_cast<Plugin*>(GetHandle(env, v, Tag::kPlugin, "plugin"));
}
Client* UnwrapClient(napi_env env, napi_value v) {
  return static_cast<Client*>(GetHandle(env, v, Tag::kClient, "client"));
}
Buffer* UnwrapBuffer(napi_env env, napi_value v) {
  return static_cast<Buffer*>(GetHandle(env, v, Tag::kBuffer, "buffer"));
}
Executable* UnwrapExecutable(napi_env env, napi_value v) {
  return static_cast<Executable*>(GetHandle(env, v, Tag::kExecutable, "executable"));
}

// ------------------------------------------------------------------------------------- events

struct Instance {
  napi_threadsafe_function tsfn = nullptr;
  int64_t loop_holds = 0;  // tasks in flight that settle promises; the TSFN holds the loop while > 0
};

static Instance* GetInstance(napi_env env) {
  void* data = nullptr;
  napi_get_instance_data(env, &data);
  return static_cast<Instance*>(data);
}

void HoldLoop(napi_env env, MainTask* task) {
  Instance* inst = GetInstance(env);
  task->tsfn = inst->tsfn;
  if (task->holds_loop && inst->loop_holds++ == 0) napi_ref_threadsafe_function(env, inst->tsfn);
}

void ReleaseLoop(napi_env env) {
  Instance* inst = GetInstance(env);
  if (inst != nullptr && --inst->loop_holds == 0) napi_unref_threadsafe_function(env, inst->tsfn);
}

void PostToMain(MainTask* task) {
  // Nothing may touch `task` after this call: the main thread may already be running it.
  if (napi_call_threadsafe_function(task->tsfn, task, napi_tsfn_nonblocking) != napi_ok) {
    // The env is closing: the task cannot run. Leaking it is the only safe choice here.
  }
}

static void CallJs(napi_env env, napi_value, void*, void* data) {
  auto* task = static_cast<MainTask*>(data);
  task->OnMain(env);
  delete task;
}

void EventWait::OnMain(napi_env env) {
  if (event != nullptr && TESSERA_HAS(api, PJRT_Event_Destroy)) {
    Args<PJRT_Event_Destroy_Args> d;
    d->event = event;
    PJRT_Error* err = api->PJRT_Event_Destroy(d.get());
    if (err != nullptr) TakeError(api, err, "PJRT_Event_Destroy");
  }
  if (host_hold) g_host_holds.fetch_sub(1);
  if (env == nullptr) return;  // tearing down: touch no JS
  if (keep != nullptr) napi_delete_reference(env, keep);
  if (deferred != nullptr) {
    if (failure.failed) {
      napi_reject_deferred(env, deferred, ErrorValue(env, failure));
    } else {
      napi_value undef;
      napi_get_undefined(env, &undef);
      napi_resolve_deferred(env, deferred, undef);
    }
  }
  if (holds_loop) ReleaseLoop(env);
}

static void OnEventReady(PJRT_Error* error, void* user_arg) {
  auto* w = static_cast<EventWait*>(user_arg);
  if (error != nullptr) w->failure = TakeError(w->api, error, w->op);
  PostToMain(w);
}

// An event that is already ready is settled here and now: no thread hop (the common case for
// cheap work on CPU, where it saves most of the cost of an await).
static bool SettledAlready(EventWait* w) {
  const PJRT_Api* api = w->api;
  if (!TESSERA_HAS(api, PJRT_Event_IsReady) || !TESSERA_HAS(api, PJRT_Event_Error)) return false;
  Args<PJRT_Event_IsReady_Args> r;
  r->event = w->event;
  PJRT_Error* err = api->PJRT_Event_IsReady(r.get());
  if (err != nullptr) {
    TakeError(api, err, "PJRT_Event_IsReady");
    return false;
  }
  if (!r->is_ready) return false;
  Args<PJRT_Event_Error_Args> e;
  e->event = w->event;
  err = api->PJRT_Event_Error(e.get());
  if (err != nullptr) w->failure = TakeError(api, err, w->op);
  return true;
}

void WaitForEvent(napi_env env, EventWait* w) {
  w->holds_loop = w->deferred != nullptr;
  HoldLoop(env, w);
  if (w->event == nullptr || SettledAlready(w)) {
    w->OnMain(env);
    delete w;
    return;
  }
  Args<PJRT_Event_OnReady_Args> a;
  a->event = w->event;
  a->callback = OnEventReady;
  a->user_arg = w;
  Failure f;
  if (!TESSERA_CALL(w->api, PJRT_Event_OnReady, a.get(), f)) {
    w->failure = f;
    w->OnMain(env);
    delete w;
  }
}

// --------------------------------------------------------------------------------------- jobs

struct JobHolder {
  Job* job;
  napi_async_work work;
  napi_deferred deferred;
};

static void JobExecute(napi_env, void* data) { static_cast<JobHolder*>(data)->job->Run(); }

static void JobComplete(napi_env env, napi_status status, void* data) {
  auto* h = static_cast<JobHolder*>(data);
  Job* job = h->job;
  if (status == napi_cancelled && !job->failure.failed) job->failure = OurFailure("tessera", "job cancelled");
  if (job->failure.failed) {
    napi_reject_deferred(env, h->deferred, ErrorValue(env, job->failure));
  } else {
    napi_value v = job->Finish(env);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value exc;
      napi_get_and_clear_last_exception(env, &exc);
      napi_reject_deferred(env, h->deferred, exc);
    } else if (v == nullptr) {
      napi_reject_deferred(env, h->deferred, ErrorValue(env, OurFailure("tessera", "job produced no value")));
    } else {
      napi_resolve_deferred(env, h->deferred, v);
    }
  }
  job->Cleanup(env);
  napi_delete_async_work(env, h->work);
  delete job;
  delete h;
}

napi_value StartJob(napi_env env, Job* job, const char* name) {
  auto* h = new JobHolder{job, nullptr, nullptr};
  napi_value promise, resource_name;
  napi_create_promise(env, &h->deferred, &promise);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name);
  if (napi_create_async_work(env, nullptr, resource_name, JobExecute, JobComplete, h, &h->work) != napi_ok ||
      napi_queue_async_work(env, h->work) != napi_ok) {
    ThrowMessage(env, name, "could not queue work on the libuv pool");
    job->Cleanup(env);
    delete job;
    delete h;
    return nullptr;
  }
  return promise;
}

// --------------------------------------------------------------------------------------- init

static void FreeInstance(napi_env, void* data, void*) { delete static_cast<Instance*>(data); }

static napi_value HeaderInfo(napi_env env, napi_callback_info) {
  napi_value o;
  napi_create_object(env, &o);
  SetProp(env, o, "major", MakeInt64(env, PJRT_API_MAJOR));
  SetProp(env, o, "minor", MakeInt64(env, PJRT_API_MINOR));
  SetProp(env, o, "apiStructSize", MakeInt64(env, PJRT_Api_STRUCT_SIZE));
  SetProp(env, o, "argsPadding", MakeInt64(env, kArgsPadding));
  return o;
}

static napi_value Stats(napi_env env, napi_callback_info) {
  napi_value o;
  napi_create_object(env, &o);
  SetProp(env, o, "liveBuffers", MakeInt64(env, g_live_buffers.load()));
  SetProp(env, o, "liveExecutables", MakeInt64(env, g_live_executables.load()));
  SetProp(env, o, "hostHolds", MakeInt64(env, g_host_holds.load()));
  return o;
}

static napi_value Init(napi_env env, napi_value exports) {
  auto* inst = new Instance();
  napi_value name;
  napi_create_string_utf8(env, "tessera.pjrt.events", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, inst, CallJs,
                                      &inst->tsfn) != napi_ok) {
    delete inst;
    ThrowMessage(env, "tessera", "could not create the event threadsafe function");
    return nullptr;
  }
  napi_unref_threadsafe_function(env, inst->tsfn);
  napi_set_instance_data(env, inst, FreeInstance, nullptr);

  AddFunction(env, exports, "headerInfo", HeaderInfo);
  AddFunction(env, exports, "stats", Stats);
  RegisterClientFunctions(env, exports);
  RegisterBufferFunctions(env, exports);
  RegisterExecutableFunctions(env, exports);
  return exports;
}

}  // namespace tessera

NAPI_MODULE(tessera_pjrt, tessera::Init)
