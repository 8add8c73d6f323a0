-- wrk script: HTTP/1.1 pipelining, 16 requests per write (wrk counts the
-- requests in what request() returns and expects as many responses).
local depth = 16

init = function(args)
    local batch = {}
    for i = 1, depth do
        batch[i] = wrk.format()
    end
    pipelined = table.concat(batch)
end

request = function()
    return pipelined
end
