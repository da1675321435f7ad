// fastmlp._cuda: built only when nvcc was found. Importing it never fails for want of a GPU or a
// driver (the CUDA runtime is linked statically); device_info() reports what it can see, and every
// other call raises RuntimeError (CudaError) or MemoryError (DeviceOutOfMemory) instead of
// aborting. This file: the module, its exceptions, device queries and DeviceBuffer (the owning
// device memory behind fastmlp.cuda.DeviceArray, with host copies and DLPack export). The ops:
// cuda_ops.cpp.
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bindings/cuda_bindings.h"
#include "common/errors.h"
#include "cuda/check.h"
#include "cuda/memory.h"
#include "cuda/runtime.h"

namespace py = pybind11;

namespace fastmlp::bind {
namespace {

using cuda::check_cuda;
using cuda::DeviceBuffer;

// ---------------------------------------------------------------- DLPack (dlpack.h, ABI v0.x/1.x
// of the unversioned DLManagedTensor: the layout every consumer of the "dltensor" capsule reads).
struct DLDevice {
  int32_t device_type;  // kDLCUDA = 2
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;  // kDLInt = 0, kDLFloat = 2
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};
constexpr int32_t kDLCUDA = 2;

// Owns the DLManagedTensor, its shape and strides, and a reference to the exporting Python object
// (which keeps the DeviceBuffer alive until the consumer calls the deleter).
struct DLPackHolder {
  DLManagedTensor tensor{};
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  py::object owner;
};

void dlpack_deleter(DLManagedTensor* self) {
  if (self == nullptr) return;
  py::gil_scoped_acquire gil;  // the consumer may call this from any thread
  std::unique_ptr<DLPackHolder> holder(static_cast<DLPackHolder*>(self->manager_ctx));
}

void dlpack_capsule_destructor(PyObject* capsule) {
  // A consumer renames the capsule to "used_dltensor" and takes over the deleter; an unconsumed
  // capsule still owns its tensor.
  if (PyCapsule_IsValid(capsule, "dltensor")) {
    auto* t = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
    if (t != nullptr && t->deleter != nullptr) t->deleter(t);
  }
}

py::capsule to_dlpack(const DeviceBuffer& buf, const std::vector<int64_t>& shape,
                      const std::string& dtype, py::object owner) {
  auto holder = std::make_unique<DLPackHolder>();
  holder->shape = shape;
  holder->strides.assign(shape.size(), 1);
  for (int64_t i = static_cast<int64_t>(shape.size()) - 2; i >= 0; --i) {
    holder->strides[i] = holder->strides[i + 1] * shape[i + 1];
  }
  holder->owner = std::move(owner);
  DLTensor& t = holder->tensor.dl_tensor;
  t.data = buf.data();
  t.device = DLDevice{kDLCUDA, buf.device()};
  t.ndim = static_cast<int32_t>(shape.size());
  if (dtype == "float32") {
    t.dtype = DLDataType{2, 32, 1};
  } else if (dtype == "int64") {
    t.dtype = DLDataType{0, 64, 1};
  } else {
    throw TypeError("dtype: DLPack export supports float32 and int64, got " + dtype);
  }
  t.shape = holder->shape.data();
  t.strides = holder->strides.data();
  t.byte_offset = 0;
  holder->tensor.manager_ctx = holder.get();
  holder->tensor.deleter = &dlpack_deleter;
  DLManagedTensor* managed = &holder->tensor;
  PyObject* capsule = PyCapsule_New(managed, "dltensor", &dlpack_capsule_destructor);
  if (capsule == nullptr) throw py::error_already_set();
  holder.release();  // owned by the capsule (or, once consumed, by the consumer) from here on
  return py::reinterpret_steal<py::capsule>(capsule);
}

// Host array checks for the copies: C-contiguous and exactly nbytes long.
const void* host_src(const py::array& a, size_t nbytes, const char* name) {
  FASTMLP_CHECK(a.flags() & py::array::c_style, name, ": expected a C-contiguous array");
  FASTMLP_CHECK(static_cast<size_t>(a.nbytes()) == nbytes, name, ": expected ", nbytes,
                " bytes, got ", a.nbytes());
  return a.data();
}

void copy_from_host(DeviceBuffer& buf, const py::array& src) {
  const void* p = host_src(src, buf.nbytes(), "src");
  if (buf.nbytes() == 0) return;
  py::gil_scoped_release release;
  check_cuda(cudaMemcpy(buf.data(), p, buf.nbytes(), cudaMemcpyHostToDevice),
             "cuda: copy to device");
}

void copy_to_host(const DeviceBuffer& buf, py::array& dst) {
  FASTMLP_CHECK(dst.writeable(), "dst: array is read-only");
  host_src(dst, buf.nbytes(), "dst");
  void* p = dst.mutable_data();
  if (buf.nbytes() == 0) return;
  py::gil_scoped_release release;
  // Synchronous on the legacy default stream: every kernel queued on it has finished first.
  check_cuda(cudaMemcpy(p, buf.data(), buf.nbytes(), cudaMemcpyDeviceToHost), "cuda: copy to host");
}

void copy_device(DeviceBuffer& dst, const DeviceBuffer& src) {
  FASTMLP_CHECK(dst.nbytes() == src.nbytes(), "src: expected ", dst.nbytes(), " bytes, got ",
                src.nbytes());
  if (dst.nbytes() == 0 || dst.data() == src.data()) return;
  py::gil_scoped_release release;
  check_cuda(
      cudaMemcpyAsync(dst.data(), src.data(), dst.nbytes(), cudaMemcpyDeviceToDevice, nullptr),
      "cuda: device-to-device copy");
}

// Makes `stream` (a consumer's cudaStream_t as an int) wait for the work queued so far on the
// legacy default stream, which all fastmlp kernels use: the DLPack producer's duty.
void stream_wait_default(uintptr_t stream) {
  cudaEvent_t event = nullptr;
  check_cuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cuda: event create");
  cudaError_t status = cudaEventRecord(event, nullptr);
  if (status == cudaSuccess) {
    status = cudaStreamWaitEvent(reinterpret_cast<cudaStream_t>(stream), event, 0);
  }
  // Destroying the event right away is allowed: it is released once the wait is satisfied.
  const cudaError_t destroyed = cudaEventDestroy(event);
  check_cuda(status, "cuda: stream wait for DLPack export");
  check_cuda(destroyed, "cuda: event destroy");
}

}  // namespace
}  // namespace fastmlp::bind

PYBIND11_MODULE(_cuda, m) {
  using fastmlp::cuda::DeviceBuffer;
  namespace fb = fastmlp::bind;
  m.doc() = "fastmlp CUDA kernels and device memory (used through fastmlp.cuda and fastmlp.ops)";

  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastmlp::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const fastmlp::cuda::DeviceOutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const fastmlp::cuda::CudaError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (const fastmlp::NonFiniteError& e) {
      PyErr_SetString(PyExc_FloatingPointError, e.what());
    } catch (const fastmlp::OutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  m.def("device_info", [] {
    const fastmlp::cuda::DeviceQuery q = fastmlp::cuda::query_devices();
    py::dict info;
    info["device_count"] = q.count;
    info["error"] = q.error;
    info["devices"] = q.names;
    info["compute_capabilities"] = q.compute_capabilities;
    info["runtime_version"] = q.runtime_version;
    info["driver_version"] = q.driver_version;
    return info;
  });
  m.def(
      "synchronize",
      [] {
        py::gil_scoped_release release;
        fastmlp::cuda::check_cuda(cudaDeviceSynchronize(), "cuda: synchronize");
      },
      "Wait for every queued kernel; raises the error of a kernel that failed.");
  m.def("current_device", [] {
    int d = 0;
    fastmlp::cuda::check_cuda(cudaGetDevice(&d), "cuda: cudaGetDevice");
    return d;
  });
  m.def("stream_wait_default", &fb::stream_wait_default, py::arg("stream"));
  m.def(
      "mem_get_info",
      [] {
        size_t free_bytes = 0, total_bytes = 0;
        fastmlp::cuda::check_cuda(cudaMemGetInfo(&free_bytes, &total_bytes),
                                  "cuda: cudaMemGetInfo");
        return py::make_tuple(free_bytes, total_bytes);
      },
      "(free, total) bytes of device memory on the current device.");

  py::class_<DeviceBuffer>(m, "DeviceBuffer",
                           "Owning device allocation (cudaMalloc / cudaFree), the storage of a "
                           "fastmlp.cuda.DeviceArray.")
      .def(py::init<size_t, const std::string&>(), py::arg("nbytes"), py::arg("what"))
      .def_property_readonly(
          "ptr", [](const DeviceBuffer& b) { return reinterpret_cast<uintptr_t>(b.data()); })
      .def_property_readonly("nbytes", &DeviceBuffer::nbytes)
      .def_property_readonly("device", &DeviceBuffer::device)
      .def("copy_from_host", &fb::copy_from_host, py::arg("src"))
      .def("copy_to_host", &fb::copy_to_host, py::arg("dst"))
      .def("copy_from", &fb::copy_device, py::arg("src"))
      .def("zero",
           [](DeviceBuffer& b) {
             if (b.nbytes() == 0) return;
             fastmlp::cuda::check_cuda(cudaMemsetAsync(b.data(), 0, b.nbytes(), nullptr),
                                       "cuda: memset");
           })
      .def("dlpack", &fb::to_dlpack, py::arg("shape"), py::arg("dtype"), py::arg("owner"),
           "A 'dltensor' capsule viewing this buffer (C-contiguous) that keeps `owner` alive.");

  fb::bind_cuda_ops(m);
  fb::bind_cuda_engine(m);
}
