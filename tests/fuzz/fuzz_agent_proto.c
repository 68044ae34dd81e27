/*
 * The guest agent protocol codec (lib/agent/proto.c), both directions: the
 * input is a byte stream of frames as either side reads it; each frame is
 * parsed and handed to every decoder (the host client's: HELLO, STARTED,
 * EXIT, OK, ERROR, END; the agent's: EXEC, PUT_FILE, GET_FILE, RESEED,
 * SIGNAL...), whatever its type, so each decoder also sees foreign
 * payloads. Decoded strings are read to their end.
 */
#include "fuzz.h"

#include <errno.h>

#include "agent/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch(const char *s)
{
	if (s)
		(void)strlen(s);
}

static void decode_all(const struct agent_frame *f)
{
	struct agent_hello h;
	if (agent_dec_hello(f, &h) == 0)
		touch(h.agent_version);
	struct agent_exec e;
	if (agent_dec_exec(f, &e) == 0) {
		for (uint32_t i = 0; i < e.argc; i++)
			touch(e.argv[i]);
		for (uint32_t i = 0; i < e.envc; i++)
			touch(e.envp[i]);
		touch(e.cwd);
		touch(e.user);
		agent_exec_free(&e);
	}
	uint32_t u32;
	uint64_t u64;
	(void)agent_dec_u32(f, &u32);
	(void)agent_dec_u64(f, &u64);
	(void)agent_dec_empty(f);
	struct agent_exit x;
	(void)agent_dec_exit(f, &x);
	struct agent_file_req fr;
	if (agent_dec_put_file(f, &fr) == 0)
		touch(fr.path);
	if (agent_dec_get_file(f, &fr) == 0)
		touch(fr.path);
	struct agent_reseed rs;
	if (agent_dec_reseed(f, &rs) == 0 && rs.len)
		(void)((volatile const uint8_t *)rs.data)[rs.len - 1];
	struct agent_netid id;
	if (agent_dec_netid(f, &id) == 0)
		(void)((volatile const uint8_t *)id.macs)[6 * id.n - 1];
	struct agent_error er;
	if (agent_dec_error(f, &er) == 0)
		touch(er.msg);
	(void)agent_msg_name(f->type);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* an exact-size heap copy: reads past the end are ASan reports */
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	size_t at = 0;
	while (at < size) {
		struct agent_frame f;
		size_t used = 0;
		int r = agent_frame_parse(buf + at, size - at, &f, &used);
		if (r == 0 || r == -ENOMSG) {
			if (used == 0 || used > size - at)
				abort(); /* the parser must advance within the input */
			if (r == 0)
				decode_all(&f);
			at += used;
			continue;
		}
		break; /* -EAGAIN, -EMSGSIZE, -EBADMSG */
	}
	free(buf);
	return 0;
}
