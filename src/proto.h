/* proto.h: the tfork wire protocol, defined once for the client (src/) and
 * the template side (serve/).  Pure encode/decode: no I/O here. */
#ifndef TFORK_PROTO_H
#define TFORK_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* A frame is an 8-byte header, then len bytes of payload:
 *   byte 0     op
 *   byte 1     number of fds riding with the frame (SCM_RIGHTS on its
 *              first byte)
 *   bytes 2-3  zero (reserved)
 *   bytes 4-7  payload length, little-endian
 * Payload fields: u32 little-endian integers (i32 as two's complement);
 * strings as u32 length, the bytes, and a NUL (not counted), so the
 * receiver can use them in place.  ARG's payload is the raw octets.
 * The client's first frame on every socket is HELLO; a process that does
 * not speak its version answers ERROR and exits.  Nothing but ARGFD and
 * FORK (and FORKED, optionally) carries fds, so a remote mode without fd
 * passing speaks the same frames minus those. */

#define TFORK_PROTO_MAGIC   0x4b524654u     /* "TFRK" */
#define TFORK_PROTO_VERSION 1u
#define TFORK_HDR_LEN       8u
#define TFORK_FRAME_MAX     (TFORK_ARG_MAX_BYTES + 65536u)  /* payload cap */
#define TFORK_ARG_MAX_BYTES (64u << 20)
#define TFORK_STR_MAX       (1u << 20)      /* one name, path or exec string */
#define TFORK_LIST_MAX      65536u          /* strings in one eval/exec list */
#define TFORK_FDS_MAX       1u              /* fds riding on one frame */

/* X(name, code, direction, fds): direction C = client to process,
 * P = process to client; fds = how many the frame must carry. */
#define TFORK_OPS(X)                                                        \
    X(HELLO,     1, C, 0)  /* u32 magic, u32 version */                     \
    X(REQUIRE,   2, C, 0)  /* str module */                                 \
    X(EVAL,      3, C, 0)  /* str func, u32 argc, argc x str */             \
    X(ARG,       4, C, 0)  /* raw octets */                                 \
    X(ARGFD,     5, C, 1)  /* empty; the fd */                              \
    X(FORK,      6, C, 1)  /* u32 id, u32 flags; the child's socket */      \
    X(RUN,       7, C, 0)  /* str func */                                   \
    X(EXEC,      8, C, 0)  /* u32 flags, str path, list argv, list envp */  \
    X(FORKED,   16, P, 0)  /* u32 id, i32 pid; pidfd if asked */        \
    X(EXIT,     17, P, 0)  /* i32 pid, i32 wait status */                   \
    X(ERROR,    18, P, 0)  /* i32 -errno, u32 fork id, i32 pid, str */   \
    X(RUNOK,    19, P, 0)  /* i32 pid: func found, about to be called */   \
    X(EXECSTART,20, P, 0)  /* i32 pid: execve follows; EOF = success
                              (sent by the template for a child it
                              spawned instead of forking: then it also
                              stands for that child's FORKED) */

enum tfork_op {
#define TFORK_OP_ENUM(n, c, d, f) TFORK_OP_##n = c,
    TFORK_OPS(TFORK_OP_ENUM)
#undef TFORK_OP_ENUM
    TFORK_OP_LIMIT = 32
};

#define TFORK_FORK_NEWROOT 1u   /* the child becomes a template of its own */
#define TFORK_FORK_PIDFD   2u   /* FORKED carries a pidfd, where the kernel
                                   has them (then its fd count is 1) */
#define TFORK_FORK_EXEC    4u   /* the child's commands, on its socket
                                   ahead of this FORK, end with EXEC: the
                                   template may spawn it (a hint; without
                                   it the template does not look) */
#define TFORK_EXEC_ENVP    1u   /* EXEC carries an environment list */

/* The RPC channel (tfork/rpc.h): after RUNOK of the RPC server function
 * the run socket carries these frames, same header, no fds ever.  Q =
 * parent to child, A = child to parent.  parts = u32 count, then count
 * strings; at most TFORK_RPC_PARTS parts of TFORK_RPC_BYTES bytes in all.
 * The parent's first frame is RPC_SETUP; calls are numbered from 1 and
 * RPC_FAIL with id 0 means the child could not start serving (unknown
 * function, init failed, version mismatch) and exits. */
#define TFORK_RPC_OPS(X)                                                    \
    X(RPC_SETUP, 32, Q)  /* u32 magic, u32 version, u32 flags, str func,  \
                            str init ("" = none) */                         \
    X(RPC_CALL,  33, Q)  /* u32 id, parts */                                \
    X(RPC_REPLY, 40, A)  /* u32 id, parts */                                \
    X(RPC_FAIL,  41, A)  /* u32 id, i32 -errno, str message */              \
    X(RPC_EVENT, 42, A)  /* parts */                                        \
    X(RPC_RETIRE,43, A)  /* empty: a pool worker asks for a graceful end */

enum tfork_rpc_op {
#define TFORK_RPC_OP_ENUM(n, c, d) TFORK_OP_##n = c,
    TFORK_RPC_OPS(TFORK_RPC_OP_ENUM)
#undef TFORK_RPC_OP_ENUM
    TFORK_RPC_OP_LIMIT = 48
};

#define TFORK_RPC_BYTES   (64u << 20)   /* = TFORK_RPC_MAX of tfork/rpc.h */
#define TFORK_RPC_PARTS   8192u         /* = TFORK_RPC_PARTS_MAX */
#define TFORK_RPC_ASYNC   1u            /* RPC_SETUP flags */
#define TFORK_RPC_POOL    2u            /* a pool worker: retire is heard */

/* The op's name ("FORK"), or NULL for an unknown op. */
const char *tfork__op_name(unsigned op);
/* How many fds op must carry, or -1 for an unknown op. */
int tfork__op_fds(unsigned op);
/* 1 when op travels from client to process (C), 0 for P, -1 unknown. */
int tfork__op_is_cmd(unsigned op);

typedef struct tfork_hdr {
    unsigned op;        /* TFORK_OP_* */
    unsigned nfds;      /* fds that ride with the frame */
    uint32_t len;       /* payload bytes */
} tfork_hdr;

void tfork__hdr_put(unsigned char out[TFORK_HDR_LEN], unsigned op,
                    unsigned nfds, uint32_t len);
/* Validates a header for a reader that accepts commands (cmd = 1) or
 * replies (cmd = 0): known op of that direction, reserved bytes zero, the
 * fd count the op requires, len within the cap.  0 or -EPROTO with a
 * message in err (size errlen). */
int tfork__hdr_get(const unsigned char in[TFORK_HDR_LEN], int cmd,
                   tfork_hdr *h, char *err, size_t errlen);

/* The RPC channel's header check: a known RPC op travelling that way
 * (to_child 1: Q ops, 0: A ops), no fds, reserved bytes zero, len within
 * TFORK_FRAME_MAX.  0 or -EPROTO with a message. */
int tfork__rpc_hdr_get(const unsigned char in[TFORK_HDR_LEN], int to_child,
                       tfork_hdr *h, char *err, size_t errlen);
const char *tfork__rpc_op_name(unsigned op);

/* A growing output buffer for encoding one frame (header included). */
typedef struct tfork_buf {
    unsigned char *p;   /* the bytes */
    size_t len;         /* used */
    size_t cap;         /* allocated */
    int oom;            /* an allocation failed: the frame is void */
} tfork_buf;

void tfork__buf_frame(tfork_buf *b, unsigned op, unsigned nfds);
void tfork__buf_u32(tfork_buf *b, uint32_t v);
void tfork__buf_str(tfork_buf *b, const char *s, size_t len);
void tfork__buf_raw(tfork_buf *b, const void *s, size_t len);
/* Fills in the header's length.  0, -ENOMEM or -E2BIG (payload over the
 * cap); on failure the buffer is freed. */
int tfork__buf_end(tfork_buf *b);
/* RPC parts: u32 n, then n strings.  The caller checks the caps first
 * (tfork__parts_check). */
struct iovec;
void tfork__buf_parts(tfork_buf *b, int n, const struct iovec *v);
/* 0, -EINVAL (n < 0, NULL v with n > 0, NULL base with a length) or
 * -E2BIG (over TFORK_RPC_PARTS parts or TFORK_RPC_BYTES bytes). */
int tfork__parts_check(int n, const struct iovec *v);
void tfork__buf_free(tfork_buf *b);

/* A cursor over a received payload.  Every getter fails (returns -EPROTO
 * and sets bad) when the payload is too short or a string lacks its NUL. */
typedef struct tfork_cur {
    const unsigned char *p;     /* next byte */
    const unsigned char *end;   /* end of payload */
    int bad;                    /* a getter failed */
} tfork_cur;

void tfork__cur_init(tfork_cur *c, const void *payload, size_t len);
int tfork__cur_u32(tfork_cur *c, uint32_t *v);
int tfork__cur_i32(tfork_cur *c, int32_t *v);
int tfork__cur_str(tfork_cur *c, const char **s, size_t *len);
/* A list: u32 count (at most max), then count strings; *v is a
 * NULL-terminated array of pointers into the payload, malloc'ed. */
int tfork__cur_list(tfork_cur *c, uint32_t max, char ***v, uint32_t *n);
/* RPC parts: *v is a malloc'ed array of n iovecs pointing into the
 * payload (each followed by its NUL), NULL when n == 0.  Refuses counts
 * and totals over the caps before allocating. */
int tfork__cur_parts(tfork_cur *c, struct iovec **v, uint32_t *n);
/* 0 when the payload was consumed exactly and no getter failed. */
int tfork__cur_done(const tfork_cur *c);

#endif
