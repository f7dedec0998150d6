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

static bool GetTypedArray(napi_env env, napi_value v, void** data, size_t* bytes) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return false;
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  napi_value ab;
  if (napi_get_typedarray_info(env, v, &type, &length, data, &ab, &offset) != napi_ok) return false;
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

static void DestroyEvent(const PJRT_Api* api, PJRT_Event* ev) {
  if (ev == nullptr || !TESSERA_HAS(api, PJRT_Event_Destroy)) return;
  Args<PJRT_Event_Destroy_Args> d;
  d->event = ev;
  PJRT_Error* err = api->PJRT_Event_Destroy(d.get());
  if (err != nullptr) TakeError(api, err, "PJRT_Event_Destroy");
}

static bool EventIsReady(const PJRT_Api* api, PJRT_Event* ev) {
  if (!TESSERA_HAS(api, PJRT_Event_IsReady)) return false;
  Args<PJRT_Event_IsReady_Args> a;
  a->event = ev;
  PJRT_Error* err = api->PJRT_Event_IsReady(a.get());
  if (err != nullptr) {
    TakeError(api, err, "PJRT_Event_IsReady");
    return false;
  }
  return a->is_ready;
}

// bufferFromHost(client, deviceIndex, data: TypedArray, type: number, dims: number[], keepHost: boolean)
//   -> buffer handle. keepHost: kImmutableUntilTransferCompletes, the TypedArray is referenced until
//   PJRT signals done_with_host_buffer (the transfer may still run after return); otherwise
//   kImmutableOnlyDuringCall (PJRT copies before returning).
static napi_value BufferFromHost(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Client* c = argc >= 1 ? UnwrapClient(env, argv[0]) : nullptr;
  if (c == nullptr) return nullptr;
  int64_t dev = -1, type = 0;
  void* data = nullptr;
  size_t bytes = 0;
  std::vector<int64_t> dims;
  bool keep_host = false;
  if (argc < 6 || !GetInt64(env, argv[1], &dev) || !GetTypedArray(env, argv[2], &data, &bytes) ||
      !GetInt64(env, argv[3], &type) || !GetInt64Array(env, argv[4], &dims) || !GetBool(env, argv[5], &keep_host)) {
    ThrowMessage(env, "bufferFromHost", "expected (client, deviceIndex, TypedArray, type, dims, keepHost)");
    return nullptr;
  }
  if (dev < 0 || dev >= static_cast<int64_t>(c->devices.size())) {
    ThrowMessage(env, "bufferFromHost", "device index out of range");
    return nullptr;
  }
  int64_t width = ElementBytes(type), count = 1;
  for (int64_t d : dims) {
    if (d < 0) width = 0;
    count *= d;
  }
  if (width == 0) {
    ThrowMessage(env, "bufferFromHost", "unsupported element type or negative dimension");
    return nullptr;
  }
  if (static_cast<uint64_t>(count * width) != bytes) {
    ThrowMessage(env, "bufferFromHost", "data holds " + std::to_string(bytes) + " bytes, shape needs " +
                                            std::to_string(count * width));
    return nullptr;
  }
  static const uint64_t kEmpty = 0;
  Args<PJRT_Client_BufferFromHostBuffer_Args> a;
  a->client = c->client;
  a->data = data != nullptr ? data : &kEmpty;
  a->type = static_cast<PJRT_Buffer_Type>(type);
  a->dims = dims.empty() ? nullptr : dims.data();
  a->num_dims = dims.size();
  a->host_buffer_semantics = keep_host ? PJRT_HostBufferSemantics_kImmutableUntilTransferCompletes
                                       : PJRT_HostBufferSemantics_kImmutableOnlyDuringCall;
  a->device = c->devices[static_cast<size_t>(dev)];
  Failure f;
  if (!TESSERA_CALL(c->api, PJRT_Client_BufferFromHostBuffer, a.get(), f)) return ThrowFailure(env, f), nullptr;

  PJRT_Event* done = a->done_with_host_buffer;
  if (done != nullptr) {
    if (!keep_host || EventIsReady(c->api, done)) {
      DestroyEvent(c->api, done);
    } else {
      auto* w = new EventWait();
      w->api = c->api;
      w->event = done;
      w->op = "done_with_host_buffer";
      napi_create_reference(env, argv[2], 1, &w->keep);
      w->host_hold = true;
      g_host_holds.fetch_add(1);
      WaitForEvent(env, w);  // releases the reference (and the event) when the plugin is done
    }
  }
  return WrapBuffer(env, new Buffer(c->api, a->buffer, static_cast<int64_t>(bytes)));
}

static Buffer* LiveBuffer(napi_env env, napi_value v, const char* op) {
  Buffer* b = UnwrapBuffer(env, v);
  if (b != nullptr && b->buffer == nullptr) {
    ThrowMessage(env, op, "buffer has been disposed");
    return nullptr;
  }
  return b;
}

// bufferToHost(buffer, dst: TypedArray) -> Promise<void>; dst is referenced until the copy is done.
static napi_value BufferToHost(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Buffer* b = argc >= 1 ? LiveBuffer(env, argv[0], "bufferToHost") : nullptr;
  if (b == nullptr) return nullptr;
  void* data = nullptr;
  size_t bytes = 0;
  if (argc < 2 || !GetTypedArray(env, argv[1], &data, &bytes)) {
    ThrowMessage(env, "bufferToHost", "expected a destination TypedArray");
    return nullptr;
  }
  static uint64_t sink = 0;
  Args<PJRT_Buffer_ToHostBuffer_Args> a;
  a->src = b->buffer;
  a->dst = data != nullptr ? data : &sink;
  a->dst_size = bytes;
  Failure f;
  if (!TESSERA_CALL(b->api, PJRT_Buffer_ToHostBuffer, a.get(), f)) return ThrowFailure(env, f), nullptr;
  napi_value promise;
  auto* w = new EventWait();
  w->api = b->api;
  w->event = a->event;
  w->op = "PJRT_Buffer_ToHostBuffer";
  napi_create_promise(env, &w->deferred, &promise);
  napi_create_reference(env, argv[1], 1, &w->keep);
  WaitForEvent(env, w);
  return promise;
}

// bufferReady(buffer) -> Promise<void>: settles when the buffer's data is computed (or failed).
static napi_value BufferReady(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Buffer* b = argc >= 1 ? LiveBuffer(env, argv[0], "bufferReady") : nullptr;
  if (b == nullptr) return nullptr;
  Args<PJRT_Buffer_ReadyEvent_Args> a;
  a->buffer = b->buffer;
  Failure f;
  if (!TESSERA_CALL(b->api, PJRT_Buffer_ReadyEvent, a.get(), f)) return ThrowFailure(env, f), nullptr;
  napi_value promise;
  auto* w = new EventWait();
  w->api = b->api;
  w->event = a->event;
  w->op = "PJRT_Buffer_ReadyEvent";
  napi_create_promise(env, &w->deferred, &promise);
  WaitForEvent(env, w);
  return promise;
}

// bufferDestroy(buffer): frees the device memory now (deferred by PJRT past pending uses). Idempotent.
static napi_value BufferDestroy(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Buffer* b = argc >= 1 ? UnwrapBuffer(env, argv[0]) : nullptr;
  if (b == nullptr) return nullptr;
  DestroyBuffer(b, env);
  return nullptr;
}

// bufferInfo(buffer) -> { type, dims, onDeviceBytes, deleted }
static napi_value BufferInfo(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Buffer* b = argc >= 1 ? LiveBuffer(env, argv[0], "bufferInfo") : nullptr;
  if (b == nullptr) return nullptr;
  const PJRT_Api* api = b->api;
  Failure f;
  napi_value out, dims, deleted;
  napi_create_object(env, &out);
  Args<PJRT_Buffer_IsDeleted_Args> del;
  del->buffer = b->buffer;
  if (!TESSERA_CALL(api, PJRT_Buffer_IsDeleted, del.get(), f)) return ThrowFailure(env, f), nullptr;
  napi_get_boolean(env, del->is_deleted, &deleted);
  SetProp(env, out, "deleted", deleted);
  if (del->is_deleted) return out;
  Args<PJRT_Buffer_ElementType_Args> t;
  t->buffer = b->buffer;
  if (!TESSERA_CALL(api, PJRT_Buffer_ElementType, t.get(), f)) return ThrowFailure(env, f), nullptr;
  SetProp(env, out, "type", MakeInt64(env, t->type));
  Args<PJRT_Buffer_Dimensions_Args> d;
  d->buffer = b->buffer;
  if (!TESSERA_CALL(api, PJRT_Buffer_Dimensions, d.get(), f)) return ThrowFailure(env, f), nullptr;
  napi_create_array_with_length(env, d->num_dims, &dims);
  for (size_t i = 0; i < d->num_dims; i++) napi_set_element(env, dims, i, MakeInt64(env, d->dims[i]));
  SetProp(env, out, "dims", dims);
  Args<PJRT_Buffer_OnDeviceSizeInBytes_Args> s;
  s->buffer = b->buffer;
  if (TESSERA_CALL(api, PJRT_Buffer_OnDeviceSizeInBytes, s.get(), f))
    SetProp(env, out, "onDeviceBytes", MakeInt64(env, static_cast<int64_t>(s->on_device_size_in_bytes)));
  return out;
}

// bufferCopyToDevice(buffer, client, deviceIndex) -> new buffer handle on that device.
static napi_value BufferCopyToDevice(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Buffer* b = argc >= 1 ? LiveBuffer(env, argv[0], "bufferCopyToDevice") : nullptr;
  Client* c = b != nullptr && argc >= 2 ? UnwrapClient(env, argv[1]) : nullptr;
  if (c == nullptr) return nullptr;
  int64_t dev = -1;
  if (argc < 3 || !GetInt64(env, argv[2], &dev) || dev < 0 || dev >= static_cast<int64_t>(c->devices.size())) {
    ThrowMessage(env, "bufferCopyToDevice", "device index out of range");
    return nullptr;
  }
  Args<PJRT_Buffer_CopyToDevice_Args> a;
  a->buffer = b->buffer;
  a->dst_device = c->devices[static_cast<size_t>(dev)];
  Failure f;
  if (!TESSERA_CALL(b->api, PJRT_Buffer_CopyToDevice, a.get(), f)) return ThrowFailure(env, f), nullptr;
  return WrapBuffer(env, new Buffer(b->api, a->dst_buffer, b->bytes));
}

static void FreeHostBlock(napi_env env, void* data, void* hint) {
  int64_t bytes = static_cast<int64_t>(reinterpret_cast<uintptr_t>(hint));
  std::free(data);
  int64_t now = 0;
  if (env != nullptr) napi_adjust_external_memory(env, -bytes, &now);
}

// allocHostBlock(bytes) -> ArrayBuffer | null: uninitialized host memory for a download, 2 MiB
// aligned and advised to use transparent huge pages (as NumPy does for large arrays), so that a
// fresh destination costs a few hundred page faults instead of one per 4 KiB. null where the
// runtime forbids external ArrayBuffers (a V8 sandbox): the caller then allocates normally.
static napi_value AllocHostBlock(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int64_t bytes = 0;
  if (argc < 1 || !GetInt64(env, argv[0], &bytes) || bytes <= 0) {
    ThrowMessage(env, "allocHostBlock", "expected a positive byte count");
    return nullptr;
  }
  constexpr size_t kHuge = 2u << 20;
  size_t size = (static_cast<size_t>(bytes) + kHuge - 1) / kHuge * kHuge;
  void* data = nullptr;
  if (posix_memalign(&data, kHuge, size) != 0 || data == nullptr) {
    ThrowMessage(env, "allocHostBlock", "out of host memory for " + std::to_string(bytes) + " bytes");
    return nullptr;
  }
#ifdef MADV_HUGEPAGE
  madvise(data, size, MADV_HUGEPAGE);
#endif
  napi_value ab;
  if (napi_create_external_arraybuffer(env, data, static_cast<size_t>(bytes), FreeHostBlock,
                                       reinterpret_cast<void*>(static_cast<uintptr_t>(size)), &ab) != napi_ok) {
    std::free(data);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
    napi_value null;
    napi_get_null(env, &null);
    return null;
  }
  int64_t now = 0;
  napi_adjust_external_memory(env, static_cast<int64_t>(size), &now);
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
