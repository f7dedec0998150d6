// Device buffers: upload from a TypedArray (host memory held exactly until PJRT is done with it), download, ready, destroy.
#include <sys/mman.h>

#include <cstdlib>

#include "tessera_pjrt.h"

namespace tessera {

// Bytes per element of the types the runtime moves; 0 for any other (refused, never sent to PJRT:
// PJRT_Buffer_Type_INVALID aborts the process).
static int64_t ElementBytes(int64_t type) {
  switch (type) {
    case PJRT_Buffer_Type_PRED:
    case PJRT_Buffer_Type_S8:
    case PJRT_Buffer_Type_U8:
      return 1;
    case PJRT_Buffer_Type_S16:
    case PJRT_Buffer_Type_U16:
    case PJRT_Buffer_Type_F16:
    case PJRT_Buffer_Type_BF16:
      return 2;
    case PJRT_Buffer_Type_S32:
    case PJRT_Buffer_Type_U32:
    case PJRT_Buffer_Type_F32:
      return 4;
    case PJRT_Buffer_Type_S64:
    case PJRT_Buffer_Type_U64:
    case PJRT_Buffer_Type_F64:
      return 8;
    default:
      return 0;
  }
}

static bool EventIsReady(const PJRT_Api* api, PJRT_Event* ev) {
  Args<PJRT_Event_IsReady_Args> a;
  a->event = ev;
  Failure ignored;  // not knowing counts as not ready: the caller then waits
  return TESSERA_CALL(api, PJRT_Event_IsReady, a.get(), ignored) && a->is_ready;
}

// Blocks until `ev` fires: only on error paths, where returning would let JS free memory PJRT still uses.
static void AwaitEvent(const PJRT_Api* api, PJRT_Event* ev) {
  if (ev == nullptr) return;
  Args<PJRT_Event_Await_Args> a;
  a->event = ev;
  Failure ignored;  // the caller is already reporting a failure
  TESSERA_CALL(api, PJRT_Event_Await, a.get(), ignored);
}

// bufferFromHost(client, deviceIndex, data: TypedArray, type: number, dims: number[], keepHost: boolean)
//   -> buffer handle. keepHost: kImmutableUntilTransferCompletes, the TypedArray is referenced until
//   PJRT signals done_with_host_buffer (the transfer may still run after return); otherwise
//   kImmutableOnlyDuringCall (PJRT copies before returning).
static napi_value BufferFromHost(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "bufferFromHost");
  Client* c = args.Get<Client>(0, "client");
  size_t dev = 0;
  int64_t type = 0;
  void* data = nullptr;
  size_t bytes = 0;
  std::vector<int64_t> dims;
  bool keep_host = false;
  if (c == nullptr || !args.Index(1, "deviceIndex", c->devices.size(), &dev) ||
      !args.TypedArray(2, "data", &data, &bytes) || !args.Int64(3, "type", &type) || !args.Int64Array(4, "dims", &dims) ||
      !args.Bool(5, "keepHost", &keep_host))
    return nullptr;
  int64_t width = ElementBytes(type), count = 1;
  if (width == 0) {
    ThrowMessage(env, args.op(), "unsupported element type " + std::to_string(type));
    return nullptr;
  }
  for (size_t i = 0; i < dims.size(); i++) {
    if (dims[i] < 0 || __builtin_mul_overflow(count, dims[i], &count)) {
      ThrowMessage(env, args.op(), "dims[" + std::to_string(i) + "] = " + std::to_string(dims[i]) +
                                       " is negative or makes the element count overflow");
      return nullptr;
    }
  }
  int64_t needed = 0;
  bool overflow = __builtin_mul_overflow(count, width, &needed);
  if (overflow || static_cast<uint64_t>(needed) != bytes) {
    ThrowMessage(env, args.op(), "data holds " + std::to_string(bytes) + " bytes, shape needs " +
                                     (overflow ? std::string("more than 2^63") : std::to_string(needed)));
    return nullptr;
  }
  static const uint64_t kEmpty = 0;
  Args<PJRT_Client_BufferFromHostBuffer_Args> a;
  a->client = c->client.get();
  a->data = data != nullptr ? data : &kEmpty;
  a->type = static_cast<PJRT_Buffer_Type>(type);
  a->dims = dims.empty() ? nullptr : dims.data();
  a->num_dims = dims.size();
  a->host_buffer_semantics = keep_host ? PJRT_HostBufferSemantics_kImmutableUntilTransferCompletes
                                       : PJRT_HostBufferSemantics_kImmutableOnlyDuringCall;
  a->device = c->devices[dev];
  Failure f;
  if (!TESSERA_CALL(c->api, PJRT_Client_BufferFromHostBuffer, a.get(), f)) return ThrowFailure(env, f), nullptr;
  auto buffer = std::make_unique<Buffer>(c->api, a->buffer);
  buffer->external_bytes = static_cast<int64_t>(bytes);

  PjrtPtr<PJRT_Event> done = Own(c->api, a->done_with_host_buffer);
  if (done != nullptr && keep_host && !EventIsReady(c->api, done.get())) {
    auto w = std::make_unique<EventWait>();
    w->api = c->api;
    w->event = std::move(done);
    w->op = "done_with_host_buffer";
    if (!NAPI_CHECK(env, napi_create_reference(env, args[2], 1, &w->keep))) {
      AwaitEvent(c->api, w->event.get());  // unreferenced, the array could be freed mid-transfer
      return nullptr;
    }
    w->host_hold = true;
    g_host_holds.fetch_add(1);
    WaitForEvent(env, w.release());  // releases the reference (and the event) when the plugin is done
  }
  return WrapBuffer(env, buffer.release());
}

// bufferToHost(buffer, dst: TypedArray) -> Promise<void>; dst is referenced until the copy is done.
static napi_value BufferToHost(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "bufferToHost");
  Buffer* b = args.GetLive<Buffer>(0, "buffer");
  void* data = nullptr;
  size_t bytes = 0;
  if (b == nullptr || !args.TypedArray(1, "dst", &data, &bytes)) return nullptr;
  static uint64_t sink = 0;
  Args<PJRT_Buffer_ToHostBuffer_Args> a;
  a->src = b->ptr.get();
  a->dst = data != nullptr ? data : &sink;
  a->dst_size = bytes;
  Failure f;
  if (!TESSERA_CALL(b->api, PJRT_Buffer_ToHostBuffer, a.get(), f)) return ThrowFailure(env, f), nullptr;
  auto w = std::make_unique<EventWait>();
  w->api = b->api;
  w->event = Own(b->api, a->event);
  w->op = "PJRT_Buffer_ToHostBuffer";
  napi_value promise = nullptr;
  if (!NAPI_CHECK(env, napi_create_promise(env, &w->deferred, &promise)) ||
      !NAPI_CHECK(env, napi_create_reference(env, args[1], 1, &w->keep))) {
    AwaitEvent(b->api, w->event.get());  // the copy is under way into memory JS could free
    return nullptr;
  }
  WaitForEvent(env, w.release());
  return promise;
}

// bufferReady(buffer) -> Promise<void>: settles when the buffer's data is computed (or failed).
static napi_value BufferReady(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "bufferReady");
  Buffer* b = args.GetLive<Buffer>(0, "buffer");
  if (b == nullptr) return nullptr;
  Args<PJRT_Buffer_ReadyEvent_Args> a;
  a->buffer = b->ptr.get();
  Failure f;
  if (!TESSERA_CALL(b->api, PJRT_Buffer_ReadyEvent, a.get(), f)) return ThrowFailure(env, f), nullptr;
  auto w = std::make_unique<EventWait>();
  w->api = b->api;
  w->event = Own(b->api, a->event);
  w->op = "PJRT_Buffer_ReadyEvent";
  napi_value promise = nullptr;
  if (!NAPI_CHECK(env, napi_create_promise(env, &w->deferred, &promise))) return nullptr;
  WaitForEvent(env, w.release());
  return promise;
}

// bufferDestroy(buffer): frees the device memory now (deferred by PJRT past pending uses). Idempotent.
static napi_value BufferDestroy(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "bufferDestroy");
  Buffer* b = args.Get<Buffer>(0, "buffer");
  if (b != nullptr) b->Destroy(env);
  return nullptr;
}

// bufferInfo(buffer) -> { type, dims, onDeviceBytes, deleted }
static napi_value BufferInfo(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "bufferInfo");
  Buffer* b = args.GetLive<Buffer>(0, "buffer");
  if (b == nullptr) return nullptr;
  const PJRT_Api* api = b->api;
  Failure f;
  napi_value out = MakeObject(env);
  Args<PJRT_Buffer_IsDeleted_Args> del;
  del->buffer = b->ptr.get();
  if (!TESSERA_CALL(api, PJRT_Buffer_IsDeleted, del.get(), f)) return ThrowFailure(env, f), nullptr;
  SetProp(env, out, "deleted", MakeBool(env, del->is_deleted));
  if (del->is_deleted) return out;
  Args<PJRT_Buffer_ElementType_Args> t;
  t->buffer = b->ptr.get();
  if (!TESSERA_CALL(api, PJRT_Buffer_ElementType, t.get(), f)) return ThrowFailure(env, f), nullptr;
  SetProp(env, out, "type", MakeInt64(env, t->type));
  Args<PJRT_Buffer_Dimensions_Args> d;
  d->buffer = b->ptr.get();
  if (!TESSERA_CALL(api, PJRT_Buffer_Dimensions, d.get(), f)) return ThrowFailure(env, f), nullptr;
  napi_value dims = MakeArray(env, d->num_dims);
  for (size_t i = 0; i < d->num_dims; i++) SetElement(env, dims, i, MakeInt64(env, d->dims[i]));
  SetProp(env, out, "dims", dims);
  Args<PJRT_Buffer_OnDeviceSizeInBytes_Args> s;
  s->buffer = b->ptr.get();
  if (TESSERA_CALL(api, PJRT_Buffer_OnDeviceSizeInBytes, s.get(), f))
    SetProp(env, out, "onDeviceBytes", MakeInt64(env, static_cast<int64_t>(s->on_device_size_in_bytes)));
  return out;
}

// bufferCopyToDevice(buffer, client, deviceIndex) -> new buffer handle on that device.
static napi_value BufferCopyToDevice(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "bufferCopyToDevice");
  Buffer* b = args.GetLive<Buffer>(0, "buffer");
  Client* c = b != nullptr ? args.Get<Client>(1, "client") : nullptr;
  size_t dev = 0;
  if (c == nullptr || !args.Index(2, "deviceIndex", c->devices.size(), &dev)) return nullptr;
  Args<PJRT_Buffer_CopyToDevice_Args> a;
  a->buffer = b->ptr.get();
  a->dst_device = c->devices[dev];
  Failure f;
  if (!TESSERA_CALL(b->api, PJRT_Buffer_CopyToDevice, a.get(), f)) return ThrowFailure(env, f), nullptr;
  auto copy = std::make_unique<Buffer>(b->api, a->dst_buffer);
  copy->external_bytes = b->external_bytes;
  return WrapBuffer(env, copy.release());
}

static void FreeHostBlock(napi_env env, void* data, void* hint) {
  int64_t bytes = static_cast<int64_t>(reinterpret_cast<uintptr_t>(hint));
  std::free(data);
  int64_t now = 0;
  if (env != nullptr) napi_adjust_external_memory(env, -bytes, &now);  // unchecked: a finalizer must not throw
}

// allocHostBlock(bytes) -> ArrayBuffer | null: uninitialized host memory for a download, 2 MiB
// aligned and advised to use transparent huge pages (as NumPy does for large arrays), so that a
// fresh destination costs a few hundred page faults instead of one per 4 KiB. null where the
// runtime forbids external ArrayBuffers (a V8 sandbox): the caller then allocates normally.
static napi_value AllocHostBlock(napi_env env, napi_callback_info info) {
  JsArgs args(env, info, "allocHostBlock");
  int64_t bytes = 0;
  if (!args.Int64(0, "bytes", &bytes)) return nullptr;
  if (bytes <= 0) {
    ThrowMessage(env, args.op(), "expected a positive byte count, got " + std::to_string(bytes));
    return nullptr;
  }
  constexpr size_t kHuge = 2u << 20;
  size_t size = (static_cast<size_t>(bytes) + kHuge - 1) / kHuge * kHuge;
  void* data = nullptr;
  if (size < static_cast<size_t>(bytes) || posix_memalign(&data, kHuge, size) != 0 || data == nullptr) {
    ThrowMessage(env, args.op(), "out of host memory for " + std::to_string(bytes) + " bytes");
    return nullptr;
  }
#ifdef MADV_HUGEPAGE
  madvise(data, size, MADV_HUGEPAGE);  // advice only: a failure changes nothing
#endif
  napi_value ab = nullptr;
  if (napi_create_external_arraybuffer(env, data, static_cast<size_t>(bytes), FreeHostBlock,
                                       reinterpret_cast<void*>(static_cast<uintptr_t>(size)), &ab) != napi_ok) {
    // Expected under a V8 sandbox, so not an error: clear what it threw and answer null.
    std::free(data);
    bool pending = false;
    napi_value ignored = nullptr;
    if (NAPI_CHECK(env, napi_is_exception_pending(env, &pending)) && pending)
      NAPI_CHECK(env, napi_get_and_clear_last_exception(env, &ignored));
    return Null(env);
  }
  int64_t now = 0;
  NAPI_CHECK(env, napi_adjust_external_memory(env, static_cast<int64_t>(size), &now));
  return ab;
}

void RegisterBufferFunctions(napi_env env, napi_value exports) {
  AddFunction(env, exports, "allocHostBlock", AllocHostBlock);
  AddFunction(env, exports, "bufferFromHost", BufferFromHost);
  AddFunction(env, exports, "bufferToHost", BufferToHost);
  AddFunction(env, exports, "bufferReady", BufferReady);
  AddFunction(env, exports, "bufferDestroy", BufferDestroy);
  AddFunction(env, exports, "bufferInfo", BufferInfo);
  AddFunction(env, exports, "bufferCopyToDevice", BufferCopyToDevice);
}

}  // namespace tessera
