/* rfload: see rfload.h and `rfload --help`. */
#include "rfload.h"

int main(int argc, char **argv)
{
    return rfl_main(argc, argv);
}
