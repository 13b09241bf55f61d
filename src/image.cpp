// Image decoding, compiled once for the flamingo::flamingo library.
#define FLAMINGO_IMPLEMENTATION
#include "flamingo/io/image.hpp"
