// The one file of the program that compiles flamingo's image decoding.
#define FLAMINGO_IMPLEMENTATION
#include <flamingo/io/image.hpp>
