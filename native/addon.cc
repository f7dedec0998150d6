// Addon core: module init, PJRT errors as JS errors, checked handles, event waits, worker jobs, napi helpers.
#include "tessera_pjrt.h"

#include <cmath>
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
  PjrtPtr<PJRT_Error> owned = Own(api, error);
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
    PjrtPtr<PJRT_Error> inner = Own(api, api->PJRT_Error_GetCode(c.get()));
    if (inner == nullptr) f.code = c->code;
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

// Builds the error object; a failing N-API call here throws its own error and gives nullptr.
napi_value ErrorValue(napi_env env, const Failure& f) {
  std::string text = f.op + ": " + f.message;
  napi_value msg = nullptr, err = nullptr, code = nullptr;
  const char* code_name = f.code >= 0 ? CodeName(f.code) : "TESSERA_NATIVE";
  if (!NAPI_CHECK(env, napi_create_string_utf8(env, text.c_str(), text.size(), &msg)) ||
      !NAPI_CHECK(env, napi_create_string_utf8(env, code_name, NAPI_AUTO_LENGTH, &code)))
    return nullptr;
  if (f.type_error) {
    if (!NAPI_CHECK(env, napi_create_type_error(env, code, msg, &err))) return nullptr;
  } else {
    if (!NAPI_CHECK(env, napi_create_error(env, code, msg, &err))) return nullptr;
  }
  if (f.code >= 0) SetProp(env, err, "pjrtCode", MakeInt64(env, f.code));
  SetProp(env, err, "pjrtOp", MakeString(env, f.op.data(), f.op.size()));
  SetProp(env, err, "pjrtMessage", MakeString(env, f.message.data(), f.message.size()));
  return err;
}

static bool ExceptionPending(napi_env env) {
  bool pending = false;
  // If even this fails, assume pending: a second throw would be worse than a lost one.
  return napi_is_exception_pending(env, &pending) != napi_ok || pending;
}

void ThrowFailure(napi_env env, const Failure& f) {
  if (ExceptionPending(env)) return;
  napi_value err = ErrorValue(env, f);
  if (err != nullptr) NAPI_CHECK(env, napi_throw(env, err));
}

void ThrowMessage(napi_env env, const char* op, const std::string& message) {
  ThrowFailure(env, OurFailure(op, message));
}

void ThrowTypeError(napi_env env, const char* op, const std::string& message) {
  Failure f = OurFailure(op, message);
  f.type_error = true;
  ThrowFailure(env, f);
}

bool NapiOk(napi_env env, napi_status status, const char* call) {
  if (status == napi_ok) return true;
  if (status == napi_pending_exception || ExceptionPending(env)) return false;
  const napi_extended_error_info* info = nullptr;
  std::string why = "status " + std::to_string(static_cast<int>(status));
  if (napi_get_last_error_info(env, &info) == napi_ok && info != nullptr && info->error_message != nullptr)
    why = info->error_message;
  // Thrown directly: going through ErrorValue could fail the same way again.
  std::string text = std::string("napi: ") + call + " failed: " + why;
  napi_throw_error(env, "TESSERA_NATIVE", text.c_str());  // unchecked: nothing is left to report a failure to
  return false;
}

// ------------------------------------------------------------------------------------ PJRT ownership

void DestroyPjrt(const PJRT_Api* api, PJRT_Error* p) {
  if (p == nullptr || !TESSERA_HAS(api, PJRT_Error_Destroy)) return;
  Args<PJRT_Error_Destroy_Args> d;
  d->error = p;
  api->PJRT_Error_Destroy(d.get());
}

// A failure to destroy has nowhere to go (deleters run on error paths, in finalizers and on plugin
// threads): its PJRT_Error is freed and the failure dropped.
#define TESSERA_DESTROY(Type, fn, field)              \
  void DestroyPjrt(const PJRT_Api* api, Type* p) {     \
    if (p == nullptr || !TESSERA_HAS(api, fn)) return; \
    Args<fn##_Args> d;                                 \
    d->field = p;                                      \
    PJRT_Error* err = api->fn(d.get());                \
    if (err != nullptr) TakeError(api, err, #fn);      \
  }
TESSERA_DESTROY(PJRT_Event, PJRT_Event_Destroy, event)
TESSERA_DESTROY(PJRT_Buffer, PJRT_Buffer_Destroy, buffer)
TESSERA_DESTROY(PJRT_Executable, PJRT_Executable_Destroy, executable)
TESSERA_DESTROY(PJRT_LoadedExecutable, PJRT_LoadedExecutable_Destroy, executable)
TESSERA_DESTROY(PJRT_Client, PJRT_Client_Destroy, client)
#undef TESSERA_DESTROY

// ------------------------------------------------------------------------------------- values

// How a rejected value reads in an error: numbers and BigInts as JS prints them, others by type.
static std::string DescribeValue(napi_env env, napi_value v) {
  napi_valuetype t = napi_undefined;
  if (v == nullptr || napi_typeof(env, v, &t) != napi_ok) return "an unreadable value";
  switch (t) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "a boolean";
    case napi_string: return "a string";
    case napi_symbol: return "a symbol";
    case napi_function: return "a function";
    case napi_external: return "a native handle of another kind";
    case napi_object: return "an object";
    case napi_number:
    case napi_bigint: {
      napi_value s = nullptr;  // a number or BigInt to string runs no user code
      std::string text;
      size_t n = 0;
      if (napi_coerce_to_string(env, v, &s) == napi_ok && napi_get_value_string_utf8(env, s, nullptr, 0, &n) == napi_ok) {
        text.resize(n + 1);
        if (napi_get_value_string_utf8(env, s, text.data(), n + 1, &n) == napi_ok) {
          text.resize(n);
          return t == napi_bigint ? text + "n" : text;
        }
      }
      return t == napi_bigint ? "a BigInt" : "a number";
    }
  }
  return "a value";
}

static bool Refuse(napi_env env, napi_value v, const char* op, const std::string& name, const std::string& expected) {
  ThrowTypeError(env, op, name + " must be " + expected + ", got " + DescribeValue(env, v));
  return false;
}

static bool TypeIs(napi_env env, napi_value v, napi_valuetype want) {
  napi_valuetype t = napi_undefined;
  return v != nullptr && NAPI_CHECK(env, napi_typeof(env, v, &t)) && t == want;
}

bool ToString(napi_env env, napi_value v, const char* op, const std::string& name, std::string* out) {
  if (!TypeIs(env, v, napi_string)) return Refuse(env, v, op, name, "a string");
  size_t n = 0;
  if (!NAPI_CHECK(env, napi_get_value_string_utf8(env, v, nullptr, 0, &n))) return false;
  out->resize(n + 1);
  if (!NAPI_CHECK(env, napi_get_value_string_utf8(env, v, out->data(), n + 1, &n))) return false;
  out->resize(n);
  return true;
}

bool ToInt64(napi_env env, napi_value v, const char* op, const std::string& name, int64_t* out) {
  static const char kExpected[] = "an integer in the int64 range [-2^63, 2^63)";
  if (TypeIs(env, v, napi_bigint)) {
    bool lossless = false;
    if (!NAPI_CHECK(env, napi_get_value_bigint_int64(env, v, out, &lossless))) return false;
    return lossless || Refuse(env, v, op, name, kExpected);
  }
  if (!TypeIs(env, v, napi_number)) return Refuse(env, v, op, name, kExpected);
  double d = 0;
  if (!NAPI_CHECK(env, napi_get_value_double(env, v, &d))) return false;
  // Checked before the cast: casting NaN, ±Infinity or anything outside [-2^63, 2^63) to int64 is
  // undefined behaviour. 2^63 is exactly representable as a double, so the upper bound is exclusive.
  constexpr double kTwo63 = 9223372036854775808.0;
  if (!(d >= -kTwo63 && d < kTwo63) || std::trunc(d) != d) return Refuse(env, v, op, name, kExpected);
  *out = static_cast<int64_t>(d);
  return true;
}

bool ToDouble(napi_env env, napi_value v, const char* op, const std::string& name, double* out) {
  if (!TypeIs(env, v, napi_number)) return Refuse(env, v, op, name, "a number");
  return NAPI_CHECK(env, napi_get_value_double(env, v, out));
}

bool ToBool(napi_env env, napi_value v, const char* op, const std::string& name, bool* out) {
  if (!TypeIs(env, v, napi_boolean)) return Refuse(env, v, op, name, "a boolean");
  return NAPI_CHECK(env, napi_get_value_bool(env, v, out));
}

bool ToArrayLength(napi_env env, napi_value v, const char* op, const std::string& name, uint32_t* length) {
  bool is_array = false;
  if (v == nullptr || !NAPI_CHECK(env, napi_is_array(env, v, &is_array))) return false;
  if (!is_array) return Refuse(env, v, op, name, "an array");
  return NAPI_CHECK(env, napi_get_array_length(env, v, length));
}

bool ToInt64Array(napi_env env, napi_value v, const char* op, const std::string& name, std::vector<int64_t>* out) {
  uint32_t n = 0;
  if (!ToArrayLength(env, v, op, name, &n)) return false;
  out->resize(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value e = nullptr;
    if (!NAPI_CHECK(env, napi_get_element(env, v, i, &e)) ||
        !ToInt64(env, e, op, name + "[" + std::to_string(i) + "]", &(*out)[i]))
      return false;
  }
  return true;
}

bool ToTypedArray(napi_env env, napi_value v, const char* op, const std::string& name, void** data, size_t* bytes) {
  bool is_ta = false;
  if (v == nullptr || !NAPI_CHECK(env, napi_is_typedarray(env, v, &is_ta))) return false;
  if (!is_ta) return Refuse(env, v, op, name, "a TypedArray");
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  napi_value ab = nullptr;
  if (!NAPI_CHECK(env, napi_get_typedarray_info(env, v, &type, &length, data, &ab, &offset))) return false;
  size_t width = 1;
  switch (type) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: width = 1; break;
    case napi_int16_array: case napi_uint16_array: width = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: width = 4; break;
    default: width = 8; break;  // float64, bigint64, biguint64
  }
  *bytes = length * width;
  return true;
}

bool ToBytes(napi_env env, napi_value v, const char* op, const std::string& name, std::string* out) {
  bool is_ta = false;
  if (v == nullptr || !NAPI_CHECK(env, napi_is_typedarray(env, v, &is_ta))) return false;
  napi_typedarray_type type = napi_int8_array;
  size_t length = 0, offset = 0;
  void* data = nullptr;
  napi_value ab = nullptr;
  if (is_ta && !NAPI_CHECK(env, napi_get_typedarray_info(env, v, &type, &length, &data, &ab, &offset))) return false;
  if (!is_ta || type != napi_uint8_array) return Refuse(env, v, op, name, "a Uint8Array");
  out->assign(static_cast<const char*>(data), length);
  return true;
}

bool ToIndex(napi_env env, napi_value v, const char* op, const std::string& name, size_t size, size_t* out) {
  int64_t i = -1;
  if (!ToInt64(env, v, op, name, &i)) return false;
  if (i < 0 || static_cast<uint64_t>(i) >= size) {
    ThrowMessage(env, op, name + " " + std::to_string(i) + " is out of range [0, " + std::to_string(size) + ")");
    return false;
  }
  *out = static_cast<size_t>(i);
  return true;
}

bool IsNullish(napi_env env, napi_value v) { return TypeIs(env, v, napi_undefined) || TypeIs(env, v, napi_null); }

napi_value MakeInt64(napi_env env, int64_t v) {
  napi_value r = nullptr;
  NAPI_CHECK(env, napi_create_int64(env, v, &r));
  return r;
}

napi_value MakeDouble(napi_env env, double v) {
  napi_value r = nullptr;
  NAPI_CHECK(env, napi_create_double(env, v, &r));
  return r;
}

napi_value MakeBool(napi_env env, bool v) {
  napi_value r = nullptr;
  NAPI_CHECK(env, napi_get_boolean(env, v, &r));
  return r;
}

napi_value MakeString(napi_env env, const char* s, size_t n) {
  napi_value r = nullptr;
  NAPI_CHECK(env, napi_create_string_utf8(env, s == nullptr ? "" : s, s == nullptr ? 0 : n, &r));
  return r;
}

napi_value MakeBytes(napi_env env, const char* data, size_t n) {
  void* dst = nullptr;
  napi_value ab = nullptr, arr = nullptr;
  if (!NAPI_CHECK(env, napi_create_arraybuffer(env, n, &dst, &ab))) return nullptr;
  if (n > 0) std::memcpy(dst, data, n);
  NAPI_CHECK(env, napi_create_typedarray(env, napi_uint8_array, n, ab, 0, &arr));
  return arr;
}

napi_value MakeObject(napi_env env) {
  napi_value r = nullptr;
  NAPI_CHECK(env, napi_create_object(env, &r));
  return r;
}

napi_value MakeArray(napi_env env, size_t length) {
  napi_value r = nullptr;
  NAPI_CHECK(env, napi_create_array_with_length(env, length, &r));
  return r;
}

napi_value Undefined(napi_env env) {
  napi_value r = nullptr;
  NAPI_CHECK(env, napi_get_undefined(env, &r));
  return r;
}

napi_value Null(napi_env env) {
  napi_value r = nullptr;
  NAPI_CHECK(env, napi_get_null(env, &r));
  return r;
}

// Skipped when a builder before already failed (and threw).
void SetProp(napi_env env, napi_value obj, const char* name, napi_value v) {
  if (obj != nullptr && v != nullptr) NAPI_CHECK(env, napi_set_named_property(env, obj, name, v));
}

void SetElement(napi_env env, napi_value array, size_t i, napi_value v) {
  if (array != nullptr && v != nullptr) NAPI_CHECK(env, napi_set_element(env, array, static_cast<uint32_t>(i), v));
}

void AddFunction(napi_env env, napi_value exports, const char* name, napi_callback cb) {
  napi_value fn = nullptr;
  if (NAPI_CHECK(env, napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, nullptr, &fn))) SetProp(env, exports, name, fn);
}

// ------------------------------------------------------------------------------------ handles

template <typename T>
static void Finalize(napi_env env, void* data, void*) {
  auto* obj = static_cast<T*>(data);
  obj->Destroy(env);
  delete obj;
}

// With a finalizer the handle owns `data`: if it cannot be made, `data` is finalized at once.
static napi_value MakeHandle(napi_env env, Handle* data, napi_finalize fin) {
  napi_value ext = nullptr;
  if (!NAPI_CHECK(env, napi_create_external(env, data, fin, nullptr, &ext))) {
    if (fin != nullptr) fin(env, data, nullptr);
    return nullptr;
  }
  return ext;
}

void* UnwrapHandle(napi_env env, napi_value v, Tag tag, const char* what, const char* op, const std::string& name) {
  void* data = nullptr;
  if (TypeIs(env, v, napi_external)) NAPI_CHECK(env, napi_get_value_external(env, v, &data));
  if (data == nullptr || static_cast<Handle*>(data)->magic != (kHandleMagic | static_cast<uint64_t>(tag))) {
    Refuse(env, v, op, name, std::string("a native ") + what + " handle");
    return nullptr;
  }
  return data;
}

std::atomic<int64_t> g_host_holds{0};

napi_value WrapPlugin(napi_env env, Plugin* p) { return MakeHandle(env, p, nullptr); }
napi_value WrapClient(napi_env env, Client* c) { return MakeHandle(env, c, nullptr); }
napi_value WrapBuffer(napi_env env, Buffer* b) {
  // Only sizable buffers are worth telling V8 about (it is what makes GC run under memory pressure);
  // skipping small ones saves two V8 calls per execution output.
  constexpr int64_t kMinReportedBytes = 64 << 10;
  if (b->external_bytes < kMinReportedBytes) b->external_bytes = 0;
  int64_t now = 0;
  if (b->external_bytes > 0 && !NAPI_CHECK(env, napi_adjust_external_memory(env, b->external_bytes, &now)))
    b->external_bytes = 0;
  return MakeHandle(env, b, Finalize<Buffer>);
}
napi_value WrapExecutable(napi_env env, Executable* e) { return MakeHandle(env, e, Finalize<Executable>); }

// ------------------------------------------------------------------------------------- events

struct Instance {
  napi_threadsafe_function tsfn = nullptr;
  int64_t loop_holds = 0;  // tasks in flight that settle promises; the TSFN holds the loop while > 0
};

static Instance* GetInstance(napi_env env) {
  void* data = nullptr;
  NAPI_CHECK(env, napi_get_instance_data(env, &data));
  return static_cast<Instance*>(data);
}

void HoldLoop(napi_env env, MainTask* task) {
  Instance* inst = GetInstance(env);
  if (inst == nullptr) return;
  task->tsfn = inst->tsfn;
  if (task->holds_loop && inst->loop_holds++ == 0) NAPI_CHECK(env, napi_ref_threadsafe_function(env, inst->tsfn));
}

void ReleaseLoop(napi_env env) {
  Instance* inst = GetInstance(env);
  if (inst != nullptr && --inst->loop_holds == 0) NAPI_CHECK(env, napi_unref_threadsafe_function(env, inst->tsfn));
}

void PostToMain(MainTask* task) {
  // Nothing may touch `task` after this call: the main thread may already be running it.
  if (napi_call_threadsafe_function(task->tsfn, task, napi_tsfn_nonblocking) != napi_ok) {
    // The env is closing (or never gave us a TSFN): the task cannot run, and deleting it here could
    // free what a plugin thread still uses. Leaking it is the only safe choice; there is no JS to tell.
  }
}

static void CallJs(napi_env env, napi_value, void*, void* data) {
  std::unique_ptr<MainTask> task(static_cast<MainTask*>(data));
  task->OnMain(env);
}

void EventWait::OnMain(napi_env env) {
  event.reset();
  if (host_hold) g_host_holds.fetch_sub(1);
  if (env == nullptr) return;  // tearing down: touch no JS
  if (keep != nullptr) NAPI_CHECK(env, napi_delete_reference(env, keep));
  if (deferred != nullptr) {
    napi_value value = failure.failed ? ErrorValue(env, failure) : Undefined(env);
    if (failure.failed) NAPI_CHECK(env, napi_reject_deferred(env, deferred, value));
    else NAPI_CHECK(env, napi_resolve_deferred(env, deferred, value));
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
  r->event = w->event.get();
  Failure ignored;  // then wait the slow way, which reports any real failure
  if (!TESSERA_CALL(api, PJRT_Event_IsReady, r.get(), ignored) || !r->is_ready) return false;
  Args<PJRT_Event_Error_Args> e;
  e->event = w->event.get();
  PJRT_Error* err = api->PJRT_Event_Error(e.get());
  if (err != nullptr) w->failure = TakeError(api, err, w->op);
  return true;
}

void WaitForEvent(napi_env env, EventWait* wait) {
  std::unique_ptr<EventWait> w(wait);
  w->holds_loop = w->deferred != nullptr;
  HoldLoop(env, w.get());
  if (w->event == nullptr || SettledAlready(w.get())) {
    w->OnMain(env);
    return;
  }
  Args<PJRT_Event_OnReady_Args> a;
  a->event = w->event.get();
  a->callback = OnEventReady;
  a->user_arg = w.get();
  if (!TESSERA_CALL(w->api, PJRT_Event_OnReady, a.get(), w->failure)) {
    w->OnMain(env);
    return;
  }
  w.release();  // OnEventReady posts it to the main thread, which deletes it
}

// --------------------------------------------------------------------------------------- jobs

struct JobHolder {
  std::unique_ptr<Job> job;
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
};

static void JobExecute(napi_env, void* data) { static_cast<JobHolder*>(data)->job->Run(); }

static void JobComplete(napi_env env, napi_status status, void* data) {
  std::unique_ptr<JobHolder> h(static_cast<JobHolder*>(data));
  Job* job = h->job.get();
  if (status == napi_cancelled && !job->failure.failed) job->failure = OurFailure("tessera", "job cancelled");
  if (job->failure.failed) {
    NAPI_CHECK(env, napi_reject_deferred(env, h->deferred, ErrorValue(env, job->failure)));
  } else {
    napi_value v = job->Finish(env);
    bool pending = false;
    NAPI_CHECK(env, napi_is_exception_pending(env, &pending));
    if (pending) {
      napi_value exc = nullptr;
      if (NAPI_CHECK(env, napi_get_and_clear_last_exception(env, &exc)))
        NAPI_CHECK(env, napi_reject_deferred(env, h->deferred, exc));
    } else if (v == nullptr) {
      NAPI_CHECK(env, napi_reject_deferred(env, h->deferred, ErrorValue(env, OurFailure("tessera", "job produced no value"))));
    } else {
      NAPI_CHECK(env, napi_resolve_deferred(env, h->deferred, v));
    }
  }
  NAPI_CHECK(env, napi_delete_async_work(env, h->work));
}

napi_value StartJob(napi_env env, std::unique_ptr<Job> job, const char* name) {
  auto h = std::make_unique<JobHolder>();
  h->job = std::move(job);
  napi_value promise = nullptr, resource_name = nullptr;
  if (!NAPI_CHECK(env, napi_create_promise(env, &h->deferred, &promise)) ||
      !NAPI_CHECK(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name)) ||
      !NAPI_CHECK(env, napi_create_async_work(env, nullptr, resource_name, JobExecute, JobComplete, h.get(), &h->work)))
    return nullptr;
  if (!NAPI_CHECK(env, napi_queue_async_work(env, h->work))) {
    NAPI_CHECK(env, napi_delete_async_work(env, h->work));
    return nullptr;
  }
  h.release();  // JobComplete frees it
  return promise;
}

// --------------------------------------------------------------------------------------- init

static void FreeInstance(napi_env, void* data, void*) { delete static_cast<Instance*>(data); }

static napi_value HeaderInfo(napi_env env, napi_callback_info) {
  napi_value o = MakeObject(env);
  SetProp(env, o, "major", MakeInt64(env, PJRT_API_MAJOR));
  SetProp(env, o, "minor", MakeInt64(env, PJRT_API_MINOR));
  SetProp(env, o, "apiStructSize", MakeInt64(env, PJRT_Api_STRUCT_SIZE));
  SetProp(env, o, "argsPadding", MakeInt64(env, kArgsPadding));
  return o;
}

static napi_value Stats(napi_env env, napi_callback_info) {
  napi_value o = MakeObject(env);
  SetProp(env, o, "liveBuffers", MakeInt64(env, Buffer::count.load()));
  SetProp(env, o, "liveExecutables", MakeInt64(env, Executable::count.load()));
  SetProp(env, o, "hostHolds", MakeInt64(env, g_host_holds.load()));
  return o;
}

static napi_value Init(napi_env env, napi_value exports) {
  auto inst = std::make_unique<Instance>();
  napi_value name = nullptr;
  if (!NAPI_CHECK(env, napi_create_string_utf8(env, "tessera.pjrt.events", NAPI_AUTO_LENGTH, &name)) ||
      !NAPI_CHECK(env, napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, inst.get(),
                                                       CallJs, &inst->tsfn)) ||
      !NAPI_CHECK(env, napi_unref_threadsafe_function(env, inst->tsfn)) ||
      !NAPI_CHECK(env, napi_set_instance_data(env, inst.get(), FreeInstance, nullptr)))
    return nullptr;
  inst.release();  // the env frees it (FreeInstance)

  AddFunction(env, exports, "headerInfo", HeaderInfo);
  AddFunction(env, exports, "stats", Stats);
  RegisterClientFunctions(env, exports);
  RegisterBufferFunctions(env, exports);
  RegisterExecutableFunctions(env, exports);
  RegisterCpuGemmFunctions(env, exports);
  RegisterHostAllocFunctions(env, exports);
  return exports;
}

}  // namespace tessera

NAPI_MODULE(tessera_pjrt, tessera::Init)
