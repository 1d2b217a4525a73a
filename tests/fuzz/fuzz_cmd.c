/* fuzz_cmd.c: the decoder of client-to-process frames (commands).  The
 * input after two plan bytes is a byte stream sent through a socketpair
 * to the exact frame reader (tfork__rd_step, commands), in pieces with
 * fds riding where the plan says; every frame it returns is checked
 * against the bytes sent and its payload decoded by its op's layout and
 * encoded again (fuzz_frame_check).  The headers the stream starts with
 * are also held to proto.h's rules in all four reader kinds.
 *   byte 0: piece size (0: all at once); byte 1: fd plan (fuzz.h). */
#include "fuzz.h"

FUZZ_ENTRY(cmd)
{
    if (size < 2 || size > (1u << 20))
        return 0;
    if (size >= 2 + TFORK_HDR_LEN)
        fuzz_hdr_diff(data + 2);
    fuzz_rd_stream(1, data[0], data[1], data + 2, size - 2);
    return 0;
}
