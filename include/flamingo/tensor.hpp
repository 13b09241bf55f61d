#pragma once
// The tensor library: extents, tensors and views, elementwise expressions, matmul.
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/expr.hpp"
#include "core/extents.hpp"
#include "core/matmul.hpp"
#include "core/executor.hpp"
#include "core/tensor.hpp"
