/* The MCP servers of each agent: created on first use from the agent's configuration,
 * shared by every thread of that agent, stopped after CHATKIT_MCP_IDLE_MS unused (and started
 * again on the next use). A run holds its agent's entry while it runs, so nothing it uses is
 * stopped under it. Only operators configure servers (chatkitd agent create): nothing from a
 * chat request reaches a command line or a URL. */
#ifndef CK_MCP_POOL_H
#define CK_MCP_POOL_H
#include <jansson.h>

#include "mcp/mcp.h"
#include "util/config.h"

typedef struct mcp_pool mcp_pool;
typedef struct mcp_agent_servers mcp_agent_servers;

mcp_pool *mcp_pool_new(uv_loop_t *loop, const config *cfg);
/* Stops every server (see mcp_server_free); run the loop afterwards. */
void mcp_pool_free(mcp_pool *p);

/* The servers of an agent (agent_config: its "mcp_stdio" / "mcp_http" lists: strings, or
 * objects {"command", "env": {K: V}} / {"url", "headers": {Name: value}}). Returns NULL when
 * the agent has none. The entry is held until mcp_pool_release. */
mcp_agent_servers *mcp_pool_acquire(mcp_pool *p, const char *agent_id, const json_t *agent_config);
void mcp_pool_release(mcp_agent_servers *a);
size_t mcp_agent_nservers(const mcp_agent_servers *a);
mcp_server *mcp_agent_server(mcp_agent_servers *a, size_t i);

/* Calls the agent's MCP tool `name` (as its server names it) once, outside any run (a widget's
 * synchronous tool action): starts what is needed, then cb(ud, result, NULL), or
 * cb(ud, NULL, message) when no server has the tool or the call failed. cb runs before this
 * returns only when the agent has no MCP server at all. */
typedef void (*mcp_pool_call_fn)(void *ud, const json_t *result, const char *err);
void mcp_pool_call(mcp_pool *p, const char *agent_id, const json_t *agent_config,
                   const char *name, const json_t *args, mcp_pool_call_fn cb, void *ud);

#endif
