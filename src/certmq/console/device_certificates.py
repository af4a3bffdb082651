"""``/console/device-certificates``: device certificates filtered by CA, status and name, a page
at a time (the registry reads one page, however many millions are registered), shown, activated,
inactivated and deleted. Inactivating and deleting ask first, saying how many live
sessions will be cut."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from certmq.console import live
from certmq.console.rendering import checked_form, current_session, failure, query, redirect, render
from certmq.console.sessions import ConsoleSession
from certmq.registry.errors import FindCaBySnError, FindDeviceBySnError, RegistryError
from certmq.registry.parameters import MAX_PAGE_SIZE
from certmq.registry.records import CaRecord, DeviceRecord
from certmq.web.context import Context
from certmq.web.paging import PageNo, PageSize

router = APIRouter(prefix="/device-certificates")

Session = Annotated[ConsoleSession, Depends(current_session)]
PAGE_SIZES = (20, 50, 100)
# The CA filter offers every registered CA (the CA limit is 1,000 by default).
MAX_CA_CHOICES = 1000


async def all_cas(context: Context) -> list[CaRecord]:
    cas: list[CaRecord] = []
    page_no = 1
    while len(cas) < MAX_CA_CHOICES:
        page = await context.registry.list_cas(page_no, MAX_PAGE_SIZE)
        cas.extend(page.items)
        if len(cas) >= page.total or not page.items:
            break
        page_no += 1
    return cas


def device_path(ca_sn: str, device_sn: str) -> str:
    return f"/console/device-certificates/{ca_sn}/{device_sn}"


@router.get("")
async def device_list(
    request: Request,
    session: Session,
    context: Context,
    ca_sn: str = "",
    status: Literal["", "active", "inactive"] = "",
    name: str = "",
    page_no: PageNo = 1,
    page_size: PageSize = PAGE_SIZES[0],
) -> Response:
    name = name.strip()
    cas = await all_cas(context)
    error = ""
    try:
        page = await context.registry.list_devices(
            page_no, page_size, ca_sn=ca_sn or None, status=status or None, name=name or None
        )
    except FindCaBySnError as unknown:
        error, page = failure(unknown), None
    pages = max(1, -(-page.total // page_size)) if page else 1
    if page is not None and page_no > pages:
        # A page past the end (after deletions, or a typed number): show the last one.
        target = query(
            "/console/device-certificates",
            ca_sn=ca_sn,
            status=status,
            name=name,
            page_no=pages,
            page_size=page_size,
        )
        return redirect(request, target)
    live_devices = live.by_device((await context.control.connections()).items)
    filters = {"ca_sn": ca_sn, "status": status, "name": name, "page_size": page_size}
    return render(
        request,
        "device_list.html",
        session=session,
        section="devices",
        cas=cas,
        ca_names={ca.sn: ca.name for ca in cas},
        page=page,
        pages=pages,
        filters=filters,
        page_sizes=PAGE_SIZES,
        live_devices=live_devices,
        error=error,
    )


async def _device_or_page(
    request: Request, session: ConsoleSession, context: Context, ca_sn: str, device_sn: str
) -> DeviceRecord | Response:
    """The device, or the page that says it is not registered."""
    try:
        return await context.registry.get_device(ca_sn, device_sn)
    except (FindDeviceBySnError, FindCaBySnError) as error:
        return render(
            request, "not_found.html", session=session, section="devices", status_code=404, message=str(error)
        )


@router.get("/{ca_sn}/{device_sn}")
async def device_detail(
    request: Request, session: Session, context: Context, ca_sn: str, device_sn: str
) -> Response:
    device = await _device_or_page(request, session, context, ca_sn, device_sn)
    if isinstance(device, Response):
        return device
    try:
        ca_name = (await context.registry.get_ca(ca_sn)).name
    except FindCaBySnError:
        ca_name = ""
    return render(
        request,
        "device_detail.html",
        session=session,
        section="devices",
        device=device,
        ca_name=ca_name,
        connections=await live.of_device(context.control, ca_sn, device_sn),
    )


CONFIRMATIONS = {
    "inactivate": (
        "Inactivate device certificate {name}?",
        "Its new connections will be refused and its live sessions cut at once. The record is kept; "
        "activate it again to let the device back.",
        "Inactivate",
    ),
    "delete": (
        "Delete device certificate {name}?",
        "The record is removed and its live sessions cut at once. Its next valid connection registers "
        "it again: to keep a device out, inactivate it instead.",
        "Delete",
    ),
}


@router.get("/{ca_sn}/{device_sn}/{action}")
async def confirm(
    request: Request, session: Session, context: Context, ca_sn: str, device_sn: str, action: str
) -> Response:
    if action not in CONFIRMATIONS:
        return render(
            request,
            "not_found.html",
            session=session,
            section="devices",
            status_code=404,
            message="no such page",
        )
    device = await _device_or_page(request, session, context, ca_sn, device_sn)
    if isinstance(device, Response):
        return device
    title, consequence, button = CONFIRMATIONS[action]
    return render(
        request,
        "confirm.html",
        session=session,
        section="devices",
        title=title.format(name=device.name),
        subject=f"device certificate {device.name}, DeviceSn {device.device_sn}, CA Sn {device.ca_sn}",
        consequence=consequence,
        disconnected=len(await live.of_device(context.control, ca_sn, device_sn)),
        action=f"{device_path(ca_sn, device_sn)}/{action}",
        button=button,
        cancel=device_path(ca_sn, device_sn),
    )


@router.post("/{ca_sn}/{device_sn}/activate")
async def activate(
    request: Request, session: Session, context: Context, ca_sn: str, device_sn: str
) -> Response:
    await checked_form(request, session)
    try:
        device = await context.registry.activate_device(ca_sn, device_sn)
    except RegistryError as error:
        return redirect(request, "/console/device-certificates", error=failure(error))
    return redirect(
        request,
        device_path(ca_sn, device_sn),
        success=f"Activated device certificate {device.name}: it may connect again.",
    )


@router.post("/{ca_sn}/{device_sn}/inactivate")
async def inactivate(
    request: Request, session: Session, context: Context, ca_sn: str, device_sn: str
) -> Response:
    await checked_form(request, session)
    cut = len(await live.of_device(context.control, ca_sn, device_sn))
    try:
        device = await context.registry.inactivate_device(ca_sn, device_sn)
    except RegistryError as error:
        return redirect(request, "/console/device-certificates", error=failure(error))
    return redirect(
        request,
        device_path(ca_sn, device_sn),
        success=f"Inactivated device certificate {device.name}: it is refused; {cut} live connection(s) disconnected.",
    )


@router.post("/{ca_sn}/{device_sn}/delete")
async def delete(
    request: Request, session: Session, context: Context, ca_sn: str, device_sn: str
) -> Response:
    await checked_form(request, session)
    cut = len(await live.of_device(context.control, ca_sn, device_sn))
    try:
        device = await context.registry.get_device(ca_sn, device_sn)
        await context.registry.delete_device(ca_sn, device_sn)
    except RegistryError as error:
        return redirect(request, "/console/device-certificates", error=failure(error))
    return redirect(
        request,
        query("/console/device-certificates", ca_sn=ca_sn),
        success=f"Deleted device certificate {device.name}; {cut} live connection(s) disconnected.",
    )
