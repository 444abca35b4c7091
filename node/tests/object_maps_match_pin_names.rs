//! `names` is kept in step with the programs by hand: the loader pins exactly `names::MAPS`
//! and finds each program by its `PROG_*` name. This reads the embedded object (no root, no
//! kernel) and fails when a map or program is added, renamed or removed on one side only.
use std::collections::BTreeSet;

use aya_obj::programs::CgroupSockAttachType;
use aya_obj::{EbpfSectionKind, Object, ProgramSection};
use meshaccel_common::names;
use meshaccel_node::bpf::OBJECT;

fn object() -> Object {
    Object::parse(OBJECT).expect("parse the embedded BPF object")
}

#[test]
fn the_objects_maps_are_exactly_names_maps() {
    let obj = object();
    // Only map sections: aya also turns .rodata/.data/.bss into maps, which are not pinned.
    let defined: BTreeSet<&str> = obj
        .maps
        .iter()
        .filter(|(_, m)| matches!(m.section_kind(), EbpfSectionKind::BtfMaps | EbpfSectionKind::Maps))
        .map(|(name, _)| name.as_str())
        .collect();
    let listed: BTreeSet<&str> = names::MAPS.into_iter().collect();
    assert_eq!(listed.len(), names::MAPS.len(), "names::MAPS lists a map twice");
    assert_eq!(defined, listed, "maps defined in the object (left) and names::MAPS (right) differ");
}

#[test]
fn the_named_programs_are_in_the_object_with_their_hooks() {
    let obj = object();
    let named = [names::PROG_SOCKOPS, names::PROG_SKMSG, names::PROG_SOCK_CREATE, names::PROG_CONSUMED];
    for name in named {
        let prog = obj.programs.get(name).unwrap_or_else(|| panic!("program {name} missing from the object"));
        // The kind the loader converts each program to (see meshaccel_node::bpf).
        let hook_ok = match name {
            names::PROG_SOCKOPS => matches!(prog.section, ProgramSection::SockOps),
            names::PROG_SKMSG => matches!(prog.section, ProgramSection::SkMsg),
            names::PROG_SOCK_CREATE => {
                matches!(prog.section, ProgramSection::CgroupSock { attach_type: CgroupSockAttachType::SockCreate })
            }
            names::PROG_CONSUMED => matches!(prog.section, ProgramSection::FExit { sleepable: false }),
            _ => unreachable!(),
        };
        assert!(hook_ok, "program {name} has section {:?}", prog.section);
    }
    // A program without a name in `names` would never be loaded or pinned.
    let defined: BTreeSet<&str> = obj.programs.keys().map(String::as_str).collect();
    assert_eq!(defined, BTreeSet::from(named), "programs in the object (left) and in names (right) differ");
}
