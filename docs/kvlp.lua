-- Wireshark dissector for KVLP, kvloom's hint protocol (docs/protocol.md).
--
--   wireshark -X lua_script:docs/kvlp.lua capture.pcap
--   tshark -X lua_script:docs/kvlp.lua -r capture.pcap -Y kvlp
--   tshark -X lua_script:docs/kvlp.lua -o kvlp.port:9000 -r capture.pcap   (another UDP port)
--
-- Every check of the specification is applied; a message that fails one is
-- marked with an expert-info error naming the field, and its fields are
-- still shown as far as the data goes.

local kvlp = Proto("kvlp", "kvloom Hint Protocol")

local HEADER_LEN = 48
local ENTRY_LEN = 12
local MAX_ENTRIES = 128
local types = { [1] = "HINT", [2] = "HINT_REPLY" }

local f = {
	magic = ProtoField.uint16("kvlp.magic", "Magic", base.HEX),
	version = ProtoField.uint8("kvlp.version", "Version", base.DEC),
	type = ProtoField.uint8("kvlp.type", "Type", base.DEC, types),
	length = ProtoField.uint16("kvlp.length", "Length", base.DEC),
	count = ProtoField.uint8("kvlp.count", "Entries", base.DEC),
	flags = ProtoField.uint8("kvlp.flags", "Flags", base.HEX),
	no_reply = ProtoField.bool("kvlp.flags.no_reply", "No reply", 8, nil, 0x01),
	request_id = ProtoField.uint64("kvlp.request_id", "Request ID", base.DEC),
	salt_id = ProtoField.uint64("kvlp.salt_id", "Salt ID", base.HEX),
	frag_index = ProtoField.uint16("kvlp.frag_index", "Fragment index", base.DEC),
	frag_count = ProtoField.uint16("kvlp.frag_count", "Fragment count", base.DEC),
	hits = ProtoField.uint16("kvlp.hits", "Hits", base.DEC),
	reserved = ProtoField.uint16("kvlp.reserved", "Reserved", base.HEX),
	bitmap = ProtoField.bytes("kvlp.bitmap", "Hit bitmap"),
	entry = ProtoField.none("kvlp.entry", "Entry"),
	fingerprint = ProtoField.uint64("kvlp.fingerprint", "Fingerprint", base.HEX),
	token_offset = ProtoField.uint32("kvlp.token_offset", "Token offset", base.DEC),
	hit = ProtoField.bool("kvlp.hit", "Hit"),
	chunk_id = ProtoField.uint64("kvlp.chunk_id", "Chunk ID", base.HEX),
	chunk_offset = ProtoField.uint32("kvlp.chunk_offset", "Chunk offset", base.DEC),
}
kvlp.fields = f

local e_malformed = ProtoExpert.new("kvlp.malformed", "Malformed KVLP message", expert.group.MALFORMED, expert.severity.ERROR)
kvlp.experts = { e_malformed }

kvlp.prefs.port = Pref.uint("UDP port", 7470, "UDP port KVLP runs on (wire.DefaultPort)")

local function bad(tree, item, msg)
	item:add_proto_expert_info(e_malformed, msg)
	tree:append_text(" [malformed: " .. msg .. "]")
end

local function bit(bitmap, i)
	local byte = bitmap:get_index(math.floor(i / 8))
	return bit32.band(byte, bit32.lshift(1, i % 8)) ~= 0
end

function kvlp.dissector(buf, pinfo, root)
	local n = buf:len()
	if n == 0 then
		return 0
	end
	pinfo.cols.protocol = "KVLP"
	local tree = root:add(kvlp, buf(), "kvloom Hint Protocol")
	if n < HEADER_LEN then
		bad(tree, tree, string.format("header: %d bytes, want at least %d", n, HEADER_LEN))
		return n
	end
	local magic = buf(0, 2):uint()
	local mi = tree:add(f.magic, buf(0, 2))
	if magic ~= 0x4B56 then
		bad(tree, mi, string.format("magic 0x%04x, want 0x4b56", magic))
		return n
	end
	local version = buf(2, 1):uint()
	local vi = tree:add(f.version, buf(2, 1))
	local typ = buf(3, 1):uint()
	local ti = tree:add(f.type, buf(3, 1))
	local length = buf(4, 2):uint()
	local li = tree:add(f.length, buf(4, 2))
	local count = buf(6, 1):uint()
	local ci = tree:add(f.count, buf(6, 1))
	local flags = buf(7, 1):uint()
	local fi = tree:add(f.flags, buf(7, 1))
	fi:add(f.no_reply, buf(7, 1))
	local req = buf(8, 8):uint64()
	tree:add(f.request_id, buf(8, 8))
	tree:add(f.salt_id, buf(16, 8))
	local fidx = buf(24, 2):uint()
	local fcnt = buf(26, 2):uint()
	local fxi = tree:add(f.frag_index, buf(24, 2))
	tree:add(f.frag_count, buf(26, 2))
	local hits = buf(28, 2):uint()
	local hi = tree:add(f.hits, buf(28, 2))
	local reserved = buf(30, 2):uint()
	local ri = tree:add(f.reserved, buf(30, 2))
	local bitmap = buf(32, 16):bytes()
	local bi = tree:add(f.bitmap, buf(32, 16))

	local name = types[typ] or string.format("Type(%d)", typ)
	pinfo.cols.info = string.format("%s req=%s frag=%d/%d entries=%d", name, tostring(req), fidx, fcnt, count)
	tree:append_text(", " .. name)

	if version ~= 1 then
		bad(tree, vi, string.format("version %d, want 1", version))
		return n
	end
	if types[typ] == nil then
		bad(tree, ti, string.format("type %d, want 1 or 2", typ))
		return n
	end
	if count < 1 or count > MAX_ENTRIES then
		bad(tree, ci, string.format("count %d, want 1..%d", count, MAX_ENTRIES))
		return n
	end
	if length ~= HEADER_LEN + ENTRY_LEN * count then
		bad(tree, li, string.format("length %d, want %d for %d entries", length, HEADER_LEN + ENTRY_LEN * count, count))
		return n
	end
	if length ~= n then
		bad(tree, li, string.format("length %d, datagram has %d bytes", length, n))
		if length > n then
			return n
		end
	end
	if bit32.band(flags, 0xFE) ~= 0 then
		bad(tree, fi, string.format("flags 0x%02x, only bit 0 is defined", flags))
	end
	if fcnt == 0 or fidx >= fcnt then
		bad(tree, fxi, string.format("fragment %d of %d", fidx, fcnt))
	end
	if reserved ~= 0 then
		bad(tree, ri, "reserved field is not zero")
	end
	local set = 0
	for i = 0, MAX_ENTRIES - 1 do
		if bit(bitmap, i) then
			set = set + 1
			if i >= count then
				bad(tree, bi, string.format("bit %d set, count is %d", i, count))
			end
		end
	end
	if typ == 1 and (hits ~= 0 or set ~= 0) then
		bad(tree, hi, "a HINT carries no hits")
	elseif typ == 2 then
		pinfo.cols.info:append(string.format(" hits=%d", hits))
		if hits ~= set then
			bad(tree, hi, string.format("hits %d, bitmap has %d bits set", hits, set))
		end
	end

	for i = 0, count - 1 do
		local off = HEADER_LEN + i * ENTRY_LEN
		local e = buf(off, ENTRY_LEN)
		local et = tree:add(f.entry, e)
		if typ == 1 then
			et:add(f.fingerprint, buf(off, 8))
			et:add(f.token_offset, buf(off + 8, 4))
			et:set_text(string.format("Entry %d: fingerprint 0x%s at token %d", i, buf(off, 8):bytes():tohex(), buf(off + 8, 4):uint()))
		else
			local h = bit(bitmap, i)
			et:add(f.hit, h)
			et:add(f.chunk_id, buf(off, 8))
			et:add(f.chunk_offset, buf(off + 8, 4))
			if h then
				et:set_text(string.format("Entry %d: hit chunk 0x%s offset %d", i, buf(off, 8):bytes():tohex(), buf(off + 8, 4):uint()))
			else
				et:set_text(string.format("Entry %d: miss", i))
				if buf(off, 8):uint64() ~= UInt64(0) or buf(off + 8, 4):uint() ~= 0 then
					bad(tree, et, string.format("entry %d is a miss but not zero", i))
				end
			end
		end
	end
	return n
end

local registered = nil

function kvlp.init()
	local udp = DissectorTable.get("udp.port")
	if registered ~= nil then
		udp:remove(registered, kvlp)
	end
	registered = kvlp.prefs.port
	udp:add(registered, kvlp)
end

-- init runs after preferences (and -o overrides) are read; registering here
-- as well makes the default port work when init is not rerun.
DissectorTable.get("udp.port"):add(kvlp.prefs.port, kvlp)
registered = kvlp.prefs.port
